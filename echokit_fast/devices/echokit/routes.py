"""The EchoKit device endpoints (spec §1.2): chat WebSockets, record mode, downloads, metrics.

* ``/ws/{id}`` -- chat (query flags ``reconnect``, ``opus``, ``vowel``, ``stream_asr``), or
  record mode with ``record=true``;
* ``/v2/stable_ws/{id}`` -- chat only (``record`` is not a flag there);
* ``/v1/record/{id}`` -- record mode;
* ``GET /downloads/download/{id}/{file}`` -- a recording (404 ``Not found`` if missing);
* ``GET /downloads/list/{id}`` -- ``[{"file_name", "download_url"}]`` of a device's
  recordings, ``download_url`` being the download path above (the reference's is wrong,
  §10.7); 404 with ``[]`` for a device without recordings (the reference answers 500);
* ``GET /metrics`` -- Prometheus metrics (the per-turn stage histograms among them).

Query flags are strict booleans: anything but ``true``/``false`` (or a flag given twice) is
refused with HTTP 400 before the upgrade. A device id or file name that is not a safe path
component is refused with 400 on the record and download paths (chat ids are never used in
paths). permessage-deflate is never negotiated: the server must run with
``ws_per_message_deflate=False`` (``echokit-fast serve`` does), as the firmware rejects
compressed frames (§1.5).

Context keys (``AppContext``): ``backends`` -- ``(transcriber, speaker,
conversation_factory)``, built by ``echokit_fast.backends.registry.build_backends(config)`` when not
installed; ``segmenter`` -- a zero-argument factory of segmenters (default: the §5.8
splitter and grouping, ``echokit_fast.conversation.splitter.SegmentGrouper``);
``device.sessions`` -- the
:class:`SessionManager`; ``device.settings`` -- its :class:`Settings` (the turn detector's VAD
from ``[asr.vad]``); ``device.hello`` -- the hello file's bytes (``hello_wav``);
``record_dir`` -- the record folder (``[record] dir``, default ``./record``);
``device.record_idle_s`` (60).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from echokit_fast.conversation.session import SessionManager, Settings
from echokit_fast.devices.echokit.connection import serve
from echokit_fast.devices.echokit.flags import Flags
from echokit_fast.devices.echokit.output import load_hello
from echokit_fast.devices.echokit.record import record_session, resolve_file, safe_name
from echokit_fast.server.app import AppContext
from echokit_fast.turn.vad_rounds import VadParams, VadTurnDetectors

__all__ = ["prepare", "routes"]

RECORD_IDLE_S = 60.0


def _build_backends(ctx: AppContext) -> Any:
    from echokit_fast.backends.registry import build_backends

    def local_tts(_cfg: Any) -> Any:
        from echokit_fast.backends.tts.local import engine as tts

        return tts.shared(ctx)  # the engine the HTTP TTS API serves, loaded once

    def local_asr(_cfg: Any) -> Any:
        from echokit_fast.backends.asr.local import engine as asr

        return asr.shared(ctx)

    return build_backends(ctx.config, local_asr=local_asr, local_tts=local_tts)


def _settings(ctx: AppContext) -> Settings:
    vad = VadParams.from_config(getattr(ctx.config.asr, "vad", None))
    return Settings(turn_detector=VadTurnDetectors(vad))


def prepare(ctx: AppContext) -> None:
    """Build the device pipeline (backend clients, settings) now, not at the first connection:
    importing and constructing the clients takes ~0.7 s, which would delay that device's hello
    and first turn."""
    _backends(ctx)
    _device_settings(ctx)
    _hello(ctx)


def _backends(ctx: AppContext) -> Any:
    return ctx.get("backends", lambda: _build_backends(ctx))


def _device_settings(ctx: AppContext) -> Settings:
    return ctx.get("device.settings", lambda: _settings(ctx))


def _hello(ctx: AppContext) -> bytes:
    return ctx.get("device.hello", lambda: load_hello(ctx.config.hello_path) or b"")


def _manager(ctx: AppContext) -> SessionManager:
    return SessionManager(
        backends=lambda: _backends(ctx),
        settings=lambda: _device_settings(ctx),
        segmenter=lambda: ctx.get("segmenter", _default_segmenter),
    )


def _default_segmenter() -> Any:
    from echokit_fast.conversation.splitter import SegmentGrouper

    return SegmentGrouper


def record_dir(ctx: AppContext) -> Path:
    return Path(ctx.get("record_dir", lambda: Path(ctx.config.record.dir)))


def routes(ctx: AppContext) -> list[BaseRoute]:
    manager = ctx.get("device.sessions", lambda: _manager(ctx))

    async def bad_request(ws: WebSocket, message: str) -> None:
        await ws.send_denial_response(PlainTextResponse(message, status_code=400))

    async def record(ws: WebSocket, device_id: str) -> None:
        if not safe_name(device_id):
            await bad_request(ws, f"invalid device id for a recording: {device_id!r}")
            return
        idle = float(ctx.get("device.record_idle_s", lambda: RECORD_IDLE_S))
        await record_session(
            ws,
            device_id,
            root=record_dir(ctx),
            callback_url=ctx.config.record.callback_url,
            idle_timeout=idle,
        )

    async def chat(ws: WebSocket, *, allow_record: bool) -> None:
        device_id = ws.path_params["id"]
        try:
            flags = Flags.parse(ws.query_params.multi_items(), allow_record=allow_record)
        except ValueError as exc:
            await bad_request(ws, str(exc))
            return
        if flags.record:
            await record(ws, device_id)
            return
        await ws.accept()
        await serve(manager, ws, device_id, flags, hello=_hello(ctx))

    async def ws_main(ws: WebSocket) -> None:
        await chat(ws, allow_record=True)

    async def ws_stable(ws: WebSocket) -> None:
        await chat(ws, allow_record=False)

    async def ws_record(ws: WebSocket) -> None:
        await record(ws, ws.path_params["id"])

    async def download(request: Request) -> Response:
        device_id, file = request.path_params["id"], request.path_params["file"]
        if not safe_name(device_id) or not safe_name(file):
            return PlainTextResponse("Bad request", status_code=400)
        path = resolve_file(record_dir(ctx), device_id, file)
        if path is None or not path.is_file():
            return PlainTextResponse("Not found", status_code=404)
        media = "audio/wav" if path.suffix.lower() == ".wav" else "application/octet-stream"
        return FileResponse(path, media_type=media)

    async def listing(request: Request) -> Response:
        device_id = request.path_params["id"]
        if not safe_name(device_id):
            return JSONResponse([], status_code=400)
        folder = resolve_file(record_dir(ctx), device_id)
        if folder is None or not folder.is_dir():
            return JSONResponse([], status_code=404)
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and safe_name(p.name))
        return JSONResponse(
            [
                {"file_name": n, "download_url": f"/downloads/download/{device_id}/{n}"}
                for n in names
            ]
        )

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        WebSocketRoute("/ws/{id}", ws_main),
        WebSocketRoute("/v2/stable_ws/{id}", ws_stable),
        WebSocketRoute("/v1/record/{id}", ws_record),
        Route("/downloads/download/{id}/{file}", download, methods=["GET"]),
        Route("/downloads/list/{id}", listing, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

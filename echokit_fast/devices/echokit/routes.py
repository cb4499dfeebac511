"""The EchoKit device endpoints (docs/protocol.md#routes): chat WebSockets, record mode, downloads,
metrics.

* ``/ws/{id}`` -- chat (query flags ``reconnect``, ``opus``, ``vowel``, ``stream_asr``), or
  record mode with ``record=true``;
* ``/v2/stable_ws/{id}`` -- chat only (``record`` is not a flag there);
* ``/v1/record/{id}`` -- record mode;
* ``GET /downloads/download/{id}/{file}`` -- a recording (404 ``Not found`` if missing);
* ``GET /downloads/list/{id}`` -- ``[{"file_name", "download_url"}]`` of a device's
  recordings, ``download_url`` being the download path above (the reference's is wrong,
  docs/compatibility.md#record-mode-and-downloads); 404 with ``[]`` for a device without recordings
  (the reference answers 500);
* ``GET /proxy/state/{id}`` -- ``{"has_notification": bool}``: whether the conversation's
  service has something for the device that has not reached it (the claude layout's Claude
  Code); 404 ``Not found`` when the conversations keep no such state (the other layouts);
* ``GET /metrics`` -- Prometheus metrics (the per-turn stage histograms among them).

With ``[server] api_key`` set (or ``$ECHOKIT_API_KEY``), both download routes answer 401
unless the request carries ``Authorization: Bearer <api_key>``.

Query flags are strict booleans: anything but ``true``/``false`` (or a flag given twice) is
refused with HTTP 400 before the upgrade. A device id or file name that is not a safe path
component is refused with 400 on the record and download paths (chat ids are never used in
paths). permessage-deflate is never negotiated: the server must run with
``ws_per_message_deflate=False`` (``echokit-fast serve`` does), as the firmware rejects
compressed frames (docs/protocol.md#connecting).

State (:class:`~echokit_fast.server.state.AppState`): ``backends`` (built by
:func:`prepare` at start-up with ``echokit_fast.backends.registry.build_backends(config)``,
the embedded engines being the state's own), ``device_settings`` (the turn detectors: VAD
from ``[asr.vad]``; in stream mode the recognizer's own when the ``[asr]`` platform streams),
``device_hello`` (the bytes of ``hello_wav``), ``segmenter`` (default: the splitter and
grouping of ``echokit_fast.conversation.splitter.SegmentGrouper``),
``sessions`` (the :class:`SessionManager`), ``record_dir`` and ``record_idle_s``. A device
that connects while the engines load is accepted and waits for them.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from echokit_fast.backends.base import Backends, Notifications
from echokit_fast.backends.registry import build_backends
from echokit_fast.config import Config
from echokit_fast.conversation.session import SessionManager, Settings
from echokit_fast.conversation.splitter import SegmentGrouper
from echokit_fast.conversation.trace import printable
from echokit_fast.devices.echokit.connection import serve
from echokit_fast.devices.echokit.flags import Flags
from echokit_fast.devices.echokit.output import load_hello
from echokit_fast.devices.echokit.record import DiskUse, record_session, resolve_file, safe_name
from echokit_fast.server.security import authorized, device_refusal
from echokit_fast.server.state import AppState
from echokit_fast.turn.asr_stream import stream_detectors
from echokit_fast.turn.smart_turn import SmartTurnDetectors

__all__ = ["build", "device_settings", "prepare", "routes"]

log = logging.getLogger(__name__)

MAX_LOGGED_REFUSALS = 1024  # distinct refused devices logged (then silence: ids are free text)


def prepare(state: AppState) -> None:
    """Build the device pipeline (backend clients, settings) when not installed: call it in
    the running loop at start-up (the HTTP clients belong to it), after the embedded engines
    are loaded; the first device then waits for neither."""
    cfg = state.config
    if state.device_hello is None:
        state.device_hello = load_hello(cfg.hello_path) or b""
    if state.backends is None:
        state.backends = build(state, cfg)
    if state.device_settings is None:
        state.device_settings = device_settings(state, cfg, state.backends)


def build(state: AppState, cfg: Config) -> Backends:
    """The device backends of ``cfg``, the embedded engines being the state's own."""
    return build_backends(
        cfg,
        local_asr=lambda _cfg: state.asr_engine(),  # the engines the HTTP APIs serve
        local_tts=lambda _cfg: state.tts_engine(),
        local_llm=lambda _cfg: state.llm_engine(),  # loaded at start-up (lifecycle)
    )


def device_settings(state: AppState, cfg: Config, backends: Backends) -> Settings:
    """The device settings of ``cfg`` over ``backends``: the turn detectors of ``[asr.vad]``
    (a streaming recognizer's own in stream mode) and the ``[limits]`` of a turn."""
    vad = getattr(cfg.asr, "vad", None)
    return Settings(
        turn_detector=SmartTurnDetectors.from_config(vad, model=state.vad_model),
        stream_detector=stream_detectors(backends.transcriber),
        max_text_bytes=cfg.limits.max_text_bytes,
        max_sessions=cfg.limits.max_sessions,
        asr_timeout_s=cfg.limits.asr_timeout_s,
        llm_answer_s=cfg.limits.llm_answer_s,
        max_answer_chars=cfg.limits.max_answer_chars,
        tts_segment_s=cfg.limits.tts_segment_s,
        turn_s=cfg.limits.turn_s,
        speculative_reply=bool(getattr(vad, "speculative_reply", False)),
        early_asr=bool(getattr(vad, "early_asr", False)),
    )


def metrics_registry() -> CollectorRegistry:
    """What ``/metrics`` reports: this process's metrics, or, in a worker of
    ``serve --workers`` (``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor), every worker's
    summed."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def _ready_settings(state: AppState) -> Settings:
    if state.device_settings is None:
        raise RuntimeError("the device settings are not built (the app did not start)")
    return state.device_settings


def routes(state: AppState) -> list[BaseRoute]:
    manager = state.sessions = SessionManager(
        backends=lambda: state.backends,
        settings=lambda: _ready_settings(state),
        segmenter=lambda: state.segmenter or SegmentGrouper,
        recent=state.turns,
    )
    root = state.record_dir
    assert root is not None
    disk = DiskUse()

    async def bad_request(ws: WebSocket, message: str) -> None:
        await ws.send_denial_response(PlainTextResponse(message, status_code=400))

    logged: set[tuple[str, int]] = set()  # the refusals logged: each (device id, status) once

    async def refused(ws: WebSocket, device_id: str) -> bool:
        """403 / 401 before the upgrade for a device the ``[server]`` checks refuse
        (:func:`~echokit_fast.server.security.device_refusal`)."""
        refusal = device_refusal(state.config.server, device_id, ws.headers, ws.query_params)
        if refusal is None:
            return False
        status, message = refusal
        if (device_id, status) not in logged and len(logged) < MAX_LOGGED_REFUSALS:
            logged.add((device_id, status))
            log.warning("device %s: refused (%d): %s", printable(device_id), status, message)
        await ws.send_denial_response(PlainTextResponse(message, status_code=status))
        return True

    async def record(ws: WebSocket, device_id: str) -> None:
        if await refused(ws, device_id):
            return
        if not safe_name(device_id):
            await bad_request(ws, f"invalid device id for a recording: {device_id!r}")
            return
        await record_session(
            ws,
            device_id,
            root=root,
            callback_url=state.config.record.callback_url,
            limits=state.config.limits,
            disk=disk,
            idle_timeout=state.record_idle_s,
        )

    async def chat(ws: WebSocket, *, allow_record: bool) -> None:
        device_id = ws.path_params["id"]
        if await refused(ws, device_id):
            return
        try:
            flags = Flags.parse(ws.query_params.multi_items(), allow_record=allow_record)
        except ValueError as exc:
            await bad_request(ws, str(exc))
            return
        if flags.record:
            await record(ws, device_id)
            return
        await ws.accept()
        await state.wait_ready()
        await serve(
            manager,
            ws,
            device_id,
            flags,
            hello=state.device_hello or b"",
            send_timeout=state.config.limits.device_send_timeout_s,
        )

    async def ws_main(ws: WebSocket) -> None:
        await chat(ws, allow_record=True)

    async def ws_stable(ws: WebSocket) -> None:
        await chat(ws, allow_record=False)

    async def ws_record(ws: WebSocket) -> None:
        await record(ws, ws.path_params["id"])

    def unauthorized() -> Response:
        return PlainTextResponse(
            "Unauthorized: send Authorization: Bearer <the server's api_key>",
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def download(request: Request) -> Response:
        if not authorized(request, state.config.server.keys):
            return unauthorized()
        device_id, file = request.path_params["id"], request.path_params["file"]
        if not safe_name(device_id) or not safe_name(file):
            return PlainTextResponse("Bad request", status_code=400)
        path = resolve_file(root, device_id, file)
        if path is None or not path.is_file():
            return PlainTextResponse("Not found", status_code=404)
        media = "audio/wav" if path.suffix.lower() == ".wav" else "application/octet-stream"
        return FileResponse(path, media_type=media)

    async def listing(request: Request) -> Response:
        if not authorized(request, state.config.server.keys):
            return unauthorized()
        device_id = request.path_params["id"]
        if not safe_name(device_id):
            return JSONResponse([], status_code=400)
        folder = resolve_file(root, device_id)
        if folder is None or not folder.is_dir():
            return JSONResponse([], status_code=404)
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and safe_name(p.name))
        return JSONResponse(
            [
                {"file_name": n, "download_url": f"/downloads/download/{device_id}/{n}"}
                for n in names
            ]
        )

    async def proxy_state(request: Request) -> Response:
        await state.wait_ready()
        factory = state.backends.conversation_factory if state.backends is not None else None
        if not isinstance(factory, Notifications):
            return PlainTextResponse("Not found", status_code=404)
        return JSONResponse(
            {"has_notification": factory.has_notification(request.path_params["id"])}
        )

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)

    return [
        WebSocketRoute("/ws/{id}", ws_main),
        WebSocketRoute("/v2/stable_ws/{id}", ws_stable),
        WebSocketRoute("/v1/record/{id}", ws_record),
        Route("/downloads/download/{id}/{file}", download, methods=["GET"]),
        Route("/downloads/list/{id}", listing, methods=["GET"]),
        Route("/proxy/state/{id}", proxy_state, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

"""The xiaozhi endpoints (docs/xiaozhi.md#endpoints), when ``[xiaozhi] enabled``:

* ``WS /xiaozhi/v1/`` -- a board's conversation. Its identity and version come in headers:
  ``Device-Id`` (required; the session is per Device-Id), ``Client-Id``, ``Authorization``,
  ``Protocol-Version`` (1, 2 or 3; default 1); a client that cannot set headers (a browser)
  may pass ``device-id``, ``client-id`` and ``authorization`` as query parameters. A missing
  ``Device-Id`` or another version is refused with 400 before the upgrade. A device the
  :mod:`.auth` check refuses is accepted, sent the text frame ``认证失败`` ("authentication
  failed", what the xiaozhi reference server sends) and closed with 1008.
* ``POST /xiaozhi/ota/`` -- what a board asks at every boot: the WebSocket URL (``[xiaozhi]
  websocket_url``, else this server's ``/xiaozhi/v1/`` at the ``Host`` the request was sent
  to, ``wss://`` behind https), its token (:meth:`.auth.Auth.token_for`) and binary protocol
  version 1, the server time (epoch ms) with the timezone offset (minutes), and a firmware
  entry: ``[xiaozhi] firmware_version``/``firmware_url`` when set, else the board's own
  version with no URL (no update). Never ``mqtt`` (the board would take MQTT) nor
  ``activation`` (it would wait for a pairing code). 400 without ``Device-Id``.
* ``GET /xiaozhi/ota/`` -- a line of text naming the WebSocket URL (a health check);
  ``POST /xiaozhi/ota/activate`` -- 200 (there is no pairing; a board polling it stops).
* ``POST /xiaozhi/devices/{Device-Id}/message`` -- push an ``alert`` (``status``, ``message``,
  ``emotion``: shown with a vibration sound) or a ``system`` command (``reboot``) to a
  connected board; JSON body as the message itself. Needs ``[server] api_key`` (403 without
  one: it can reboot boards) and ``Authorization: Bearer <api_key>`` (401); 404 when no board
  with that Device-Id is connected, 400 for another body.

``/xiaozhi/v1`` and ``/xiaozhi/ota`` (without the trailing slash) answer too.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from echokit_fast.conversation.device import DeviceGone
from echokit_fast.conversation.trace import printable
from echokit_fast.devices import socket
from echokit_fast.devices.xiaozhi import protocol
from echokit_fast.devices.xiaozhi.auth import Auth
from echokit_fast.devices.xiaozhi.connection import Connection, serve
from echokit_fast.server.security import authorized
from echokit_fast.server.state import AppState

__all__ = ["AUTH_FAILED", "WS_PATH", "routes"]

log = logging.getLogger("echokit_fast.device")

WS_PATH = "/xiaozhi/v1/"
OTA_PATH = "/xiaozhi/ota/"
#: the text frame a refused device gets before the Close
AUTH_FAILED = "认证失败"
#: the largest request body read (the firmware's system info is a few KiB)
MAX_BODY = 64 * 1024
#: the longest Device-Id taken
MAX_ID_CHARS = 128
PUSH_SHAPES = (
    'expected {"type":"alert","status":S,"message":M,"emotion":E} '
    'or {"type":"system","command":"reboot"}'
)


def _utc_offset_min() -> int:
    offset = datetime.datetime.now().astimezone().utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def routes(state: AppState) -> list[BaseRoute]:
    cfg = state.config.xiaozhi
    if not cfg.enabled:
        return []
    auth = Auth(cfg)
    limits = state.config.limits

    def ws_url(request: Request) -> str:
        if cfg.websocket_url is not None:
            return cfg.websocket_url
        scheme = "wss" if request.url.scheme == "https" else "ws"
        return f"{scheme}://{request.url.netloc}{WS_PATH}"

    async def conversation(ws: WebSocket) -> None:
        def given(name: str) -> str | None:
            return ws.headers.get(name) or ws.query_params.get(name)

        device_id = given("device-id")
        version = (ws.headers.get("protocol-version") or "1").strip()
        problem = None
        if not device_id or len(device_id) > MAX_ID_CHARS:
            problem = "a Device-Id header is required"
        elif version not in {str(v) for v in protocol.PROTOCOL_VERSIONS}:
            problem = f"Protocol-Version must be 1, 2 or 3, got {version[:20]!r}"
        if problem is not None or device_id is None:
            await ws.send_denial_response(PlainTextResponse(problem, status_code=400))
            return
        await ws.accept()
        if not auth.allows(device_id, given("client-id") or "", given("authorization")):
            log.warning("device %s: xiaozhi authentication failed", printable(device_id))
            timeout = limits.device_send_timeout_s
            with contextlib.suppress(DeviceGone):
                await socket.send(ws, AUTH_FAILED, timeout=timeout, log_id=printable(device_id))
            await socket.close(ws, 1008, "authentication failed", timeout=timeout)
            return
        assert state.sessions is not None, "the EchoKit routes make the session manager"
        await serve(
            state.sessions,
            ws,
            device_id=device_id,
            version=int(version),
            cfg=cfg,
            limits=limits,
            ready=state.wait_ready,
        )

    async def ota(request: Request) -> Response:
        if request.method == "GET":
            return PlainTextResponse(f"OTA interface is running; WebSocket: {ws_url(request)}")
        device_id = request.headers.get("device-id")
        if not device_id:
            return JSONResponse({"error": "a Device-Id header is required"}, status_code=400)
        body = await _body(request)
        if body is None:
            return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, 413)
        try:
            info = json.loads(body) if body else {}
        except ValueError:
            info = {}
        version = _dig(info, "application", "version")
        log.info(
            "xiaozhi OTA: device %s board %s firmware %s (%s)",
            printable(device_id),
            printable(str(_dig(info, "board", "type"))),
            printable(str(version)),
            printable(request.headers.get("user-agent", "")),
        )
        client_id = request.headers.get("client-id", "")
        offset = cfg.timezone_offset_min
        reply: dict[str, Any] = {
            "websocket": {
                "url": ws_url(request),
                "token": auth.token_for(device_id, client_id),
                "version": 1,
            },
            "server_time": {
                "timestamp": int(time.time() * 1000),
                "timezone_offset": _utc_offset_min() if offset is None else offset,
            },
        }
        if cfg.firmware_version is not None:
            reply["firmware"] = {"version": cfg.firmware_version, "url": cfg.firmware_url}
        elif isinstance(version, str):
            reply["firmware"] = {"version": version, "url": ""}
        return JSONResponse(reply)

    async def activate(_request: Request) -> Response:
        return PlainTextResponse("success")

    async def push(request: Request) -> Response:
        keys = state.config.server.keys
        if not keys:
            return JSONResponse({"error": "set [server] api_key to push messages"}, 403)
        if not authorized(request, keys):
            return JSONResponse({"error": "send Authorization: Bearer <api_key>"}, 401)
        body = await _body(request)
        if body is None:
            return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, 413)
        try:
            msg = json.loads(body)
        except ValueError:
            msg = None
        frame = _pushed(msg)
        if frame is None:
            return JSONResponse({"error": PUSH_SHAPES}, 400)
        session = state.sessions.sessions.get(request.path_params["id"]) if state.sessions else None
        conn = session.conn if session is not None else None
        if not isinstance(conn, Connection):
            return JSONResponse({"error": "no xiaozhi board connected with that Device-Id"}, 404)
        try:
            await conn.send(frame)
        except DeviceGone:
            return JSONResponse({"error": "the board went away"}, 404)
        return JSONResponse({"sent": msg["type"]})

    return [
        *(WebSocketRoute(p, conversation) for p in (WS_PATH, WS_PATH.rstrip("/"))),
        *(Route(p, ota, methods=["GET", "POST"]) for p in (OTA_PATH, OTA_PATH.rstrip("/"))),
        Route(f"{OTA_PATH}activate", activate, methods=["POST"]),
        Route("/xiaozhi/devices/{id}/message", push, methods=["POST"]),
    ]


async def _body(request: Request) -> bytes | None:
    """The request body, None past :data:`MAX_BODY`."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


def _pushed(msg: Any) -> str | None:
    """The frame for a pushed ``alert`` or ``system`` message, None if it is neither."""
    if not isinstance(msg, dict):
        return None
    if msg.get("type") == "alert":
        fields = [msg.get(k) for k in ("status", "message", "emotion")]
        if all(isinstance(v, str) for v in fields):
            return protocol.alert(*fields)
    elif msg.get("type") == "system" and isinstance(msg.get("command"), str):
        return protocol.system(msg["command"])
    return None

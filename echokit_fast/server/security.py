"""Who may use the server: the ``Origin`` check, CORS and the API key (``[server]`` of the
config, :class:`~echokit_fast.config.ServerConfig`).

A web page on any site can make the visitor's browser open a WebSocket to a LAN address, or
send it a "simple" cross-origin POST (a multipart form), without asking the server first; the
browser only says where the page comes from, in ``Origin``. So :class:`OriginCheck` refuses
with 403, before the route runs, every WebSocket upgrade and every request other than
GET/HEAD whose ``Origin`` is neither the server's own (the ``Host`` it was reached at) nor one
of ``[server] allowed_origins``. A request without ``Origin`` (a device, curl, another server)
is not a browser's cross-site request and passes. CORS preflights (``OPTIONS``) from other
origins get the same 403; those from allowed origins are answered by Starlette's
``CORSMiddleware``, which also adds ``Access-Control-Allow-Origin`` to their responses.

Same-origin is judged against ``Host``, which a DNS-rebinding page controls: the check stops
pages of other sites, not a page that made its own name resolve to this server.

``[server] api_key`` (or ``$ECHOKIT_API_KEY``) guards the recordings: :func:`authorized`.
``[server] devices`` is the allow-list of device ids: :func:`device_allowed`.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from echokit_fast.config import ServerConfig, normalize_origin

__all__ = ["OriginCheck", "authorized", "device_allowed", "middleware"]

#: methods a cross-origin page may send without being refused (they change nothing here)
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _host_origin(scheme: str, host: str | None) -> str | None:
    """The origin of a page served from ``Host: host`` under the Origin's `scheme`."""
    return normalize_origin(f"{scheme}://{host}") if host else None


class OriginCheck:
    """Pure ASGI middleware: 403 for a cross-origin WebSocket upgrade or state-changing
    request whose origin is not allowed (module docstring)."""

    def __init__(self, app: ASGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.any = "*" in allowed_origins
        self.allowed = frozenset(allowed_origins)

    def allows(self, origin: str, host: str | None) -> bool:
        if self.any:
            return True
        normal = normalize_origin(origin)  # "null" (sandboxed pages, file:) is never allowed
        if normal is None:
            return False
        return normal in self.allowed or normal == _host_origin(normal.split(":", 1)[0], host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" or (kind == "http" and scope["method"] not in SAFE_METHODS):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self.allows(origin, headers.get("host")):
                what = "WebSocket" if kind == "websocket" else scope["method"]
                refusal = PlainTextResponse(
                    f"cross-origin {what} refused: Origin {origin!r} is not allowed here "
                    "(add it to [server] allowed_origins)",
                    status_code=403,
                )
                if kind == "websocket" and "websocket.http.response" not in scope.get(
                    "extensions", {}
                ):  # a server without denial responses answers a close before accept with 403
                    await send({"type": "websocket.close", "code": 1008})
                else:  # the answer to the upgrade request: nothing is accepted
                    await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def middleware(cfg: ServerConfig) -> list[Middleware]:
    """The middleware of the app: the origin check, then CORS for the allowed origins."""
    stack = [Middleware(OriginCheck, allowed_origins=cfg.allowed_origins)]
    if cfg.allowed_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cfg.allowed_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    return stack


def authorized(request: Request, api_key: str | None) -> bool:
    """Whether `request` may use a route guarded by `api_key` (any request when it is None):
    it carries ``Authorization: Bearer <api_key>``."""
    if api_key is None:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    )


def device_allowed(cfg: ServerConfig, device_id: str) -> bool:
    """Whether ``device_id`` may connect: any id without ``[server] devices``, else a listed
    one (case-insensitive: the firmware's ids are hex digits)."""
    return cfg.devices is None or device_id.strip().lower() in cfg.devices

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

``[server] api_key`` / ``api_keys`` (or ``--api-key``, ``$ECHOKIT_API_KEY``) guard every
``/v1`` API route (:class:`ApiKeyCheck`: 401 with an OpenAI error body, before the route runs)
and the recordings (:func:`authorized`). The device routes (``/ws/``, ``/v2/stable_ws/``,
``/v1/record/``) take no API key -- the EchoKit firmware sends only its URL -- but
:func:`device_refusal`: ``[server] devices``, the allow-list of device ids (403), and
``[server] device_token``, a shared token in ``?token=`` or ``Authorization`` (401), both
before the upgrade. :func:`exposure_warning` is the start-up warning for a server open to its
network.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from echokit_fast.api.common import error_body
from echokit_fast.config import ServerConfig, normalize_origin

__all__ = [
    "ApiKeyCheck",
    "OriginCheck",
    "authorized",
    "device_allowed",
    "device_refusal",
    "exposure_warning",
    "is_api_path",
    "is_loopback",
    "middleware",
]

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
    if cfg.keys:  # after CORS: a preflight (which carries no key) is answered first
        stack.append(Middleware(ApiKeyCheck, keys=cfg.keys))
    return stack


#: the device routes under /v1 (the firmware's record mode): no API key, the device checks
DEVICE_V1_PREFIXES = ("/v1/record/",)


def is_api_path(path: str) -> bool:
    """Whether `path` is one of the OpenAI-compatible API's (``/v1/...`` but the devices')."""
    return (path == "/v1" or path.startswith("/v1/")) and not path.startswith(DEVICE_V1_PREFIXES)


def _matches(token: str, keys: Sequence[str]) -> bool:
    given = token.strip().encode()
    # every key compared (no early exit): the time taken does not tell which one was close
    return any([hmac.compare_digest(given, key.encode()) for key in keys])


def _bearer(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


def authorized(request: Request, keys: Sequence[str]) -> bool:
    """Whether `request` may use a route guarded by `keys` (any request when there are none):
    it carries ``Authorization: Bearer <one of keys>``."""
    if not keys:
        return True
    token = _bearer(request.headers)
    return token is not None and _matches(token, keys)


class ApiKeyCheck:
    """Pure ASGI middleware: 401 with an OpenAI error body for a request to an API path
    (:func:`is_api_path`; ``/v1/realtime``'s WebSocket upgrade included) without
    ``Authorization: Bearer <one of keys>``."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = tuple(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and is_api_path(scope["path"]):
            token = _bearer(Headers(scope=scope))
            if token is None or not _matches(token, self.keys):
                await self._refuse(scope, receive, send, given=token is not None)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, *, given: bool) -> None:
        message = (
            "Incorrect API key provided."
            if given
            else "Missing API key: send Authorization: Bearer <key> (the server's --api-key)."
        )
        refusal = JSONResponse(
            error_body(401, message, code="invalid_api_key"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        if scope["type"] == "websocket" and "websocket.http.response" not in scope.get(
            "extensions", {}
        ):
            await send({"type": "websocket.close", "code": 1008})
        else:
            await refusal(scope, receive, send)


def device_allowed(cfg: ServerConfig, device_id: str) -> bool:
    """Whether ``device_id`` may connect: any id without ``[server] devices``, else a listed
    one (case-insensitive: the firmware's ids are hex digits)."""
    return cfg.devices is None or device_id.strip().lower() in cfg.devices


def device_refusal(
    cfg: ServerConfig, device_id: str, headers: Headers, query: Mapping[str, str]
) -> tuple[int, str] | None:
    """Why a device connection is refused, as (HTTP status, message), or None when it may
    connect: 403 for an id outside ``[server] devices``, 401 without ``[server]
    device_token`` in ``?token=`` or ``Authorization`` (``Bearer <token>`` or the bare token)."""
    if not device_allowed(cfg, device_id):
        return 403, "Forbidden: this device id is not in the server's [server] devices"
    if cfg.device_token is not None:
        header = headers.get("authorization")
        given = query.get("token") or _bearer(headers) or header
        if given is None or not _matches(given, [cfg.device_token]):
            return 401, "Unauthorized: give the server's [server] device_token as ?token="
    return None


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 bracketed or not) is this machine's."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(cfg: ServerConfig, host: str) -> str | None:
    """The start-up warning for a server bound to `host`, reachable from its network, with
    neither an API key nor a device allow-list; None when it is not."""
    if is_loopback(host) or cfg.keys or cfg.devices is not None or cfg.device_token:
        return None
    return (
        f"listening on {host} with no API key and no device allow-list: anyone on the "
        "network may use this server (set --api-key, [server] devices or device_token)"
    )

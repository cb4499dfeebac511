"""The HTTP/WebSocket application served by `echokit-fast serve`.

`create_app` assembles the routes of every service module (`echokit_fast.api.*`, the EchoKit
and xiaozhi device front ends and the browser's talk page, `echokit_fast.devices.web`; each
exposes `routes(state) -> list[BaseRoute]`) around one
:class:`~echokit_fast.server.state.AppState`, behind the origin check and CORS of
:mod:`echokit_fast.server.security`, and runs the start-up and shutdown of
:mod:`echokit_fast.server.lifecycle` as its lifespan.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from echokit_fast import __version__
from echokit_fast.api import asr, chat, models, realtime, tts, vad
from echokit_fast.api.common import error_response
from echokit_fast.config import Config
from echokit_fast.devices.echokit import routes as device
from echokit_fast.devices.echokit.protocol import COMPATIBLE_VERSION
from echokit_fast.devices.web import routes as web
from echokit_fast.devices.web.access import API_PREFIX
from echokit_fast.devices.xiaozhi import routes as xiaozhi
from echokit_fast.server import security
from echokit_fast.server.lifecycle import lifespan
from echokit_fast.server.state import AppState

__all__ = ["create_app"]

#: (the xiaozhi front end after the EchoKit one: it shares the EchoKit routes' sessions)
SERVICES = (asr, tts, chat, models, vad, realtime, device, xiaozhi, web)


async def version(_request: Request) -> JSONResponse:
    """The echokit_server version whose protocol we speak, and our own."""
    return JSONResponse({"version": COMPATIBLE_VERSION, "server": f"echokit-fast {__version__}"})


async def health(_request: Request) -> JSONResponse:
    """200 while the process serves (a liveness probe)."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    """200 once the configured engines are loaded (every worker's, with ``serve --workers``),
    503 before (a readiness probe)."""
    state = request.app.state.echokit
    if state.ready and state.peers_ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "loading"}, status_code=503)


def json_errors(path: str) -> bool:
    """Whether errors on `path` are OpenAI error bodies: the API's paths and the console's."""
    return security.is_api_path(path) or path.startswith(API_PREFIX + "/")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's refusals (404 for an unknown path, 405 for a method a route does not take)
    as OpenAI error bodies on the API's paths and the console's (``/console/api/...``), as
    plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    if not json_errors(request.url.path):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 404:
        message = f"Unknown request URL: {request.method} {request.url.path}"
        code: str | None = "unknown_url"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
        code = "method_not_allowed"
    else:
        message, code = exc.detail, None
    return error_response(exc.status_code, message, code=code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected exception (Starlette logs it): OpenAI's 500 body on the API's paths and
    the console's."""
    if not json_errors(request.url.path):
        return PlainTextResponse("Internal Server Error", status_code=500)
    return error_response(500, "The server had an error while processing your request.")


def create_app(config: Config | None = None, *, state: AppState | None = None) -> Starlette:
    """The application over `state` (default: a new one for `config`)."""
    if state is None:
        state = AppState(config) if config is not None else AppState()
    routes: list[BaseRoute] = [
        Route("/version", version, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]
    for module in SERVICES:
        routes.extend(module.routes(state))
    app = Starlette(
        routes=routes,
        middleware=security.middleware(state.config.server),
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.echokit = state
    return app

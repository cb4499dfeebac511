"""The HTTP/WebSocket application served by `echokit-fast serve`.

`create_app` assembles the routes of every service module (`echokit_fast.api.*` and the
EchoKit and xiaozhi device front ends; each exposes `routes(state) -> list[BaseRoute]`) around one
:class:`~echokit_fast.server.state.AppState`, behind the origin check and CORS of
:mod:`echokit_fast.server.security`, and runs the start-up and shutdown of
:mod:`echokit_fast.server.lifecycle` as its lifespan.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from echokit_fast import __version__
from echokit_fast.api import asr, realtime, tts, vad
from echokit_fast.config import Config
from echokit_fast.devices.echokit import routes as device
from echokit_fast.devices.echokit.protocol import COMPATIBLE_VERSION
from echokit_fast.devices.xiaozhi import routes as xiaozhi
from echokit_fast.server import security
from echokit_fast.server.lifecycle import lifespan
from echokit_fast.server.state import AppState

__all__ = ["create_app"]

#: (the xiaozhi front end after the EchoKit one: it shares the EchoKit routes' sessions)
SERVICES = (asr, tts, vad, realtime, device, xiaozhi)


async def version(_request: Request) -> JSONResponse:
    """The echokit_server version whose protocol we speak, and our own."""
    return JSONResponse({"version": COMPATIBLE_VERSION, "server": f"echokit-fast {__version__}"})


async def health(_request: Request) -> JSONResponse:
    """200 while the process serves (a liveness probe)."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    """200 once the configured engines are loaded, 503 before (a readiness probe)."""
    if request.app.state.echokit.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "loading"}, status_code=503)


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
        routes=routes, middleware=security.middleware(state.config.server), lifespan=lifespan
    )
    app.state.echokit = state
    return app

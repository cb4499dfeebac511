"""The HTTP/WebSocket application served by `echokit-fast serve`."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from echokit_fast import __version__


async def version(_request: Request) -> JSONResponse:
    return JSONResponse({"version": __version__})


def create_app() -> Starlette:
    return Starlette(routes=[Route("/version", version, methods=["GET"])])

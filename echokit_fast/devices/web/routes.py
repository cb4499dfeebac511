"""The talk page: ``GET /`` and its files under ``/console/static/`` (``static/`` of this
package, shipped in the wheel); the status page's routes (:mod:`.status`), the config
editor's (:mod:`.config`) and the recordings' (:mod:`.recordings`, for the talk page's Record
mode) are added here.

Every file is answered with its content type, ``Cache-Control: no-cache`` (the browser
revalidates with the ETag, so a new release is seen at once and an unchanged file costs a
304) and ``X-Content-Type-Options: nosniff``; the page with a Content-Security-Policy that
lets it load nothing but this server's own files and open WebSockets to it alone.
The page opens the device socket from the server's own origin, which the origin check of
:mod:`echokit_fast.server.security` allows; the device checks (``[server] devices``,
``device_token``: the page passes on its own ``?token=``) apply to it as to any device.
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from echokit_fast.devices.web import config, recordings, status
from echokit_fast.server.state import AppState

__all__ = ["PREFIX", "routes"]

#: where the page's files are served
PREFIX = "/console/static"

#: the content type of each kind of file served (not the platform's mimetypes table)
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

#: the page may load only this server's files and connect only to this server
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class ConsoleFiles(StaticFiles):
    """The package's static files, with the headers of the module docstring."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        suffix = os.path.splitext(full_path)[1]
        response.headers["content-type"] = MEDIA_TYPES.get(suffix, "application/octet-stream")
        response.headers["cache-control"] = "no-cache"
        response.headers["x-content-type-options"] = "nosniff"
        if suffix == ".html":
            response.headers["content-security-policy"] = CSP
            response.headers["referrer-policy"] = "no-referrer"
        return response


def routes(state: AppState) -> list[BaseRoute]:
    files = ConsoleFiles(packages=[("echokit_fast.devices.web", "static")])

    async def index(request: Request) -> Response:
        return await files.get_response("index.html", request.scope)

    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Mount(PREFIX, app=files),
        *status.routes(state, files),
        *config.routes(state, files),
        *recordings.routes(state),
    ]

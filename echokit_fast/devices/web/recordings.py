"""The recordings of record mode (:mod:`echokit_fast.devices.echokit.record`) for the talk
page's Record mode, under the console's access rule (:mod:`.access`).

* ``GET /console/api/recordings?device=ID`` -- ``{"recordings": [...]}``, newest first, one
  object per WAV file of the record folder (of that device only with ``device``): ``device``,
  ``name``, ``bytes`` (the file's size), ``modified`` (Unix time of its last write),
  ``seconds`` (the audio's length), ``finished`` (false while the recording is still being
  written: its header still has the streaming sizes) and ``url`` (the route below).
* ``GET /console/api/recordings/{device}/{name}`` -- the file (``audio/wav``).

A device id or file name that is not a safe name, or a file that is not there, is a 404 with an
OpenAI error body (nothing outside the record folder is ever read). Unlike
``/downloads/list/{id}`` these answer with sizes and times, and follow the console's rule (a
key, or this machine only) rather than the devices' one.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from echokit_fast.api.common import error_response
from echokit_fast.devices.echokit.record import HEADER_BYTES, resolve_file, safe_name
from echokit_fast.devices.web.access import API_PREFIX, refusal
from echokit_fast.server.state import AppState

__all__ = ["listing", "routes"]

#: bytes per second of a recording (16 kHz mono PCM16)
BYTES_PER_S = 32000
#: the data size of a header not yet patched (docs/protocol.md#record-mode)
STREAMING_SIZE = 0xFFFFFFFF


def _finished(path: Path) -> bool:
    with path.open("rb") as f:
        header = f.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        return False
    (data_size,) = struct.unpack_from("<I", header, HEADER_BYTES - 4)
    return data_size != STREAMING_SIZE


def _entry(device: str, path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {
        "device": device,
        "name": path.name,
        "bytes": stat.st_size,
        "modified": stat.st_mtime,
        "seconds": max(stat.st_size - HEADER_BYTES, 0) / BYTES_PER_S,
        "finished": _finished(path),
        "url": f"{API_PREFIX}/recordings/{device}/{path.name}",
    }


def listing(root: Path, device: str | None = None) -> list[dict[str, Any]]:
    """The recordings under ``root`` (of ``device`` only when given), newest first."""
    base = root.resolve()
    if not base.is_dir():
        return []
    if device is None:
        folders = [p for p in base.iterdir() if p.is_dir() and safe_name(p.name)]
    else:
        folder = resolve_file(base, device)
        folders = [folder] if folder is not None and folder.is_dir() else []
    out = []
    for folder in folders:
        for path in folder.iterdir():
            if path.suffix.lower() == ".wav" and path.is_file() and safe_name(path.name):
                out.append(_entry(folder.name, path))
    out.sort(key=lambda e: (e["modified"], e["name"]), reverse=True)
    return out


def _not_found(request: Request) -> JSONResponse:
    return error_response(404, f"No such recording: {request.url.path}", code="recording_not_found")


def routes(state: AppState) -> list[BaseRoute]:
    root = state.record_dir
    assert root is not None

    async def recordings(request: Request) -> Response:
        refused = refusal(request, state.config.server.keys)
        if refused is not None:
            return refused
        device = request.query_params.get("device")
        if device is not None and not safe_name(device):
            return error_response(
                400, f"Not a device id: {device!r}", param="device", code="invalid_device_id"
            )
        found = await asyncio.to_thread(listing, root, device)
        return JSONResponse({"recordings": found}, headers={"cache-control": "no-store"})

    async def download(request: Request) -> Response:
        refused = refusal(request, state.config.server.keys)
        if refused is not None:
            return refused
        device, name = request.path_params["device"], request.path_params["name"]
        path = resolve_file(root, device, name)
        if path is None or path.suffix.lower() != ".wav" or not path.is_file():
            return _not_found(request)
        return FileResponse(path, media_type="audio/wav", headers={"cache-control": "no-store"})

    return [
        Route(f"{API_PREFIX}/recordings", recordings, methods=["GET"]),
        Route(f"{API_PREFIX}/recordings/{{device}}/{{name}}", download, methods=["GET"]),
    ]

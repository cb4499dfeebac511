"""Record mode (docs/protocol.md#record-mode): the device's microphone stream into a WAV file per
connection.

``/ws/{id}?record=true`` and ``/v1/record/{id}``: every binary frame is appended to
``<record_dir>/<id>/record_<YYYYMMDD_HHMMSS±zzzz>.wav`` (server local time; ``_2``, ``_3`` ...
appended if that name exists); text frames are ignored; nothing is sent to the client. The
recording ends after ``idle_timeout`` seconds without a message (60), when the client closes
(Close frame or not) or on an error. Then, if ``[record] callback_url`` is set, the server
POSTs ``{"id": ID, "download_uri": "/downloads/download/ID/FILE"}`` to it.

Fixes of the reference (docs/compatibility.md#record-mode-and-downloads): the callback is made on
*every* ending, a clean Close frame included, and ``download_uri`` (like the list endpoint's
``download_url``) is the path the file is really served at. The WAV header is written with the
streaming placeholders (RIFF size 0x7FFFFFFF, data size 0xFFFFFFFF, so the file can be read while it
grows) and patched with the real sizes when the recording ends (the reference never patches it). An
odd trailing byte of a frame is carried to the next frame so samples stay aligned; one left at the
end is dropped.

Paths are never built from unchecked input: the device id and file names must match
:data:`SAFE_NAME` (letters, digits, ``_ . + -``, not starting with a dot, at most 128
characters) and the resolved path must lie inside the record folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from echokit_fast.audio import wav_header
from echokit_fast.devices.echokit.mic import EvenBytes

__all__ = ["SAFE_NAME", "Recorder", "post_callback", "resolve_file", "safe_name"]

log = logging.getLogger("echokit_fast.device")

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,127}")
CALLBACK_TIMEOUT = 10.0


def safe_name(name: str) -> bool:
    """True for a device id or file name that is safe as one path component."""
    return bool(SAFE_NAME.fullmatch(name)) and ".." not in name


def resolve_file(root: Path, device_id: str, file: str | None = None) -> Path | None:
    """``root/device_id[/file]`` if every part is a safe name and the real path stays inside
    ``root`` (no symlink escapes); else None."""
    if not safe_name(device_id) or (file is not None and not safe_name(file)):
        return None
    base = root.resolve()
    path = base / device_id if file is None else base / device_id / file
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return None
    if real != base and base not in real.parents:
        return None
    return real


def _header(data_size: int | None) -> bytes:
    if data_size is None:  # streaming: RIFF size 0x7FFFFFFF, data size 0xFFFFFFFF
        return wav_header(16000, riff_size=0x7FFFFFFF)
    return wav_header(16000, data_size=data_size)


def _timestamp() -> str:
    return time.strftime("%Y%m%d_%H%M%S%z", time.localtime())


class Recorder:
    """One recording: ``write`` PCM16 frames, ``close`` to patch the header."""

    def __init__(self, root: Path, device_id: str) -> None:
        folder = resolve_file(root, device_id)
        if folder is None:
            raise ValueError(f"unsafe device id {device_id!r}")
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"record_{_timestamp()}"
        for n in range(1, 1000):
            name = f"{stem}.wav" if n == 1 else f"{stem}_{n}.wav"
            try:
                self._file = open(folder / name, "xb")  # noqa: SIM115 - closed in close()
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(f"{folder / stem}*.wav: too many recordings this second")
        self.device_id = device_id
        self.name = name
        self.path = folder / name
        self.size = 0
        self._pcm = EvenBytes()
        self._file.write(_header(None))
        self._file.flush()

    def write(self, data: bytes) -> None:
        data = self._pcm.align(data)
        if data:
            self._file.write(data)
            self.size += len(data)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.seek(0)
            self._file.write(_header(self.size))
        finally:
            self._file.close()


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=CALLBACK_TIMEOUT) as resp:
        return resp.status


async def post_callback(url: str, device_id: str, download_uri: str) -> bool:
    """POST the recording's JSON to ``url``; False (logged) on any failure."""
    body = json.dumps({"id": device_id, "download_uri": download_uri}).encode()
    try:
        status = await asyncio.to_thread(_post, url, body)
    except Exception as exc:
        log.warning("record callback to %s failed: %s", url, exc)
        return False
    if not 200 <= status < 300:
        log.warning("record callback to %s answered HTTP %d", url, status)
        return False
    return True


async def record_session(
    ws: Any,
    device_id: str,
    *,
    root: Path,
    callback_url: str | None,
    idle_timeout: float = 60.0,
) -> None:
    """Serve one record-mode WebSocket (the id was checked; not accepted yet)."""
    from starlette.responses import PlainTextResponse

    try:
        rec = await asyncio.to_thread(Recorder, root, device_id)
    except (OSError, ValueError) as exc:
        log.error("device %s: cannot start a recording: %s", device_id, exc)
        await ws.send_denial_response(PlainTextResponse("Internal Server Error", 500))
        return
    await ws.accept()
    log.info("device %s: recording to %s", device_id, rec.path)
    ending = "closed"
    try:
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), idle_timeout)
            except asyncio.TimeoutError:
                ending = "idle"
                break
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is not None:
                rec.write(data)
    except Exception as exc:
        ending = "error"
        log.warning("device %s: recording ended by an error: %r", device_id, exc)
    finally:
        rec.close()
        if ending != "closed":
            with contextlib.suppress(Exception):
                await ws.close(1000)
    log.info("device %s: recording %s ended (%s, %d bytes)", device_id, rec.name, ending, rec.size)
    if callback_url:
        await post_callback(callback_url, device_id, f"/downloads/download/{device_id}/{rec.name}")

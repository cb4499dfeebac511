"""Record mode (docs/protocol.md#record-mode): the device's microphone stream into a WAV file per
connection.

``/ws/{id}?record=true`` and ``/v1/record/{id}``: every binary frame is appended to
``<record_dir>/<id>/record_<YYYYMMDD_HHMMSS±zzzz>.wav`` (server local time; ``_2``, ``_3`` ...
appended if that name exists); text frames are ignored; nothing is sent to the client. The
recording ends after ``idle_timeout`` seconds without a message (60), when the client closes
(Close frame or not), on an error, or at a cap of ``[limits]``: ``max_record_s`` seconds after
it started, ``max_record_bytes`` of audio, or when the device id's recordings take
``max_record_disk_bytes_per_device`` (:class:`DiskUse`); what does not fit is dropped and the
client gets a Close 1000 whose reason names the cap. A device whose recordings already fill its
quota is refused before the upgrade (HTTP 507, one warning). Then, if ``[record] callback_url``
is set, the server POSTs ``{"id": ID, "download_uri": "/downloads/download/ID/FILE"}`` to it.

Fixes of the reference (docs/compatibility.md#record-mode-and-downloads): the callback is made on
*every* ending, a clean Close frame included, and ``download_uri`` (like the list endpoint's
``download_url``) is the path the file is really served at. The WAV header is written with the
streaming placeholders (RIFF size 0x7FFFFFFF, data size 0xFFFFFFFF, so the file can be read while it
grows) and patched with the real sizes when the recording ends (the reference never patches it);
``max_record_bytes`` keeps them within 32 bits. An odd trailing byte of a frame is carried to the
next frame so samples stay aligned; one left at the end is dropped.

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
from echokit_fast.config import LimitsConfig
from echokit_fast.conversation.trace import printable
from echokit_fast.devices.echokit.mic import EvenBytes

__all__ = [
    "SAFE_NAME",
    "DiskUse",
    "Recorder",
    "folder_bytes",
    "post_callback",
    "record_session",
    "resolve_file",
    "safe_name",
]

log = logging.getLogger("echokit_fast.device")

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,127}")
CALLBACK_TIMEOUT = 10.0
HEADER_BYTES = 44


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

    def write(self, data: bytes, room: int) -> bool:
        """Append the whole samples of ``data``, at most ``room`` bytes of them; False when
        some did not fit (they are dropped)."""
        data = self._pcm.align(data)
        fit = data[: max(room, 0) & ~1]
        if fit:
            self._file.write(fit)
            self.size += len(fit)
        return len(fit) == len(data)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.seek(0)
            self._file.write(_header(self.size))
        finally:
            self._file.close()


def folder_bytes(folder: Path | None) -> int:
    """The bytes of the files in ``folder`` (0 when it does not exist)."""
    if folder is None or not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


class DiskUse:
    """The bytes each device id's recordings take, for ``max_record_disk_bytes_per_device``:
    read from the device's folder when a recording starts while none of its others is live,
    then counted as its live recordings write (forgotten when the last one ends, so files
    removed meanwhile are seen by the next reading)."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._live: dict[str, int] = {}

    def begin(self, device_id: str) -> int | None:
        """A recording of ``device_id`` starts: the bytes in use, or None when none of its
        recordings is live (read its folder then, and :meth:`set`). Pair with :meth:`end`.
        Counted live at once, so that a recording ending meanwhile keeps the count."""
        self._live[device_id] = self._live.get(device_id, 0) + 1
        return self._used.get(device_id)

    def set(self, device_id: str, on_disk: int) -> int:
        """``on_disk``: the folder's bytes, read after :meth:`begin`; the bytes in use (the
        count of a recording that began meanwhile wins: it was read as early)."""
        return self._used.setdefault(device_id, on_disk)

    def used(self, device_id: str) -> int:
        return self._used[device_id]

    def add(self, device_id: str, n: int) -> None:
        self._used[device_id] += n

    def end(self, device_id: str) -> None:
        self._live[device_id] -= 1
        if not self._live[device_id]:
            del self._live[device_id]
            self._used.pop(device_id, None)


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
    limits: LimitsConfig,
    disk: DiskUse,
    idle_timeout: float = 60.0,
) -> None:
    """Serve one record-mode WebSocket (the id was checked; not accepted yet) under the record
    caps of ``limits``, the device's disk use counted in ``disk`` (one per app)."""
    from starlette.responses import PlainTextResponse

    log_id = printable(device_id)
    quota = limits.max_record_disk_bytes_per_device
    used = disk.begin(device_id)
    try:
        if used is None:
            try:
                on_disk = await asyncio.to_thread(folder_bytes, resolve_file(root, device_id))
            except OSError as exc:
                log.warning("device %s: cannot start a recording: %s", log_id, exc)
                await ws.send_denial_response(PlainTextResponse("Internal Server Error", 500))
                return
            used = disk.set(device_id, on_disk)
        if used + HEADER_BYTES + 2 > quota:
            log.warning(
                "device %s: recording refused: its recordings take %d bytes "
                "(max_record_disk_bytes_per_device %d)",
                log_id,
                used,
                quota,
            )
            body = "recording refused: this device's recordings fill its disk quota"
            await ws.send_denial_response(PlainTextResponse(body, 507))
            return
        # the header is counted before the file exists: a live recording of the device may
        # fill the quota while the file is being made
        disk.add(device_id, HEADER_BYTES)
        try:
            rec = await asyncio.to_thread(Recorder, root, device_id)
        except (OSError, ValueError) as exc:
            disk.add(device_id, -HEADER_BYTES)
            log.warning("device %s: cannot start a recording: %s", log_id, exc)
            await ws.send_denial_response(PlainTextResponse("Internal Server Error", 500))
            return
        ending = await _record(ws, rec, disk, limits, idle_timeout)
    finally:
        disk.end(device_id)
    log.info("device %s: recording %s ended (%s, %d bytes)", log_id, rec.name, ending, rec.size)
    if callback_url:
        await post_callback(callback_url, device_id, f"/downloads/download/{device_id}/{rec.name}")


async def _record(
    ws: Any, rec: Recorder, disk: DiskUse, limits: LimitsConfig, idle_timeout: float
) -> str:
    """Accept, then write the stream into ``rec`` until it ends; how it ended: closed, idle,
    error or the name of the cap it reached."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.max_record_s
    device_id = rec.device_id
    log_id = printable(device_id)
    ending = "closed"
    try:
        await ws.accept()
        log.info("device %s: recording to %s", log_id, rec.path)
        while True:
            left = deadline - loop.time()
            try:
                msg = await asyncio.wait_for(ws.receive(), min(idle_timeout, max(left, 0.0)))
            except TimeoutError:
                ending = "max_record_s" if left <= idle_timeout else "idle"
                break
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data is None:
                continue
            rec_room = limits.max_record_bytes - rec.size
            disk_room = limits.max_record_disk_bytes_per_device - disk.used(device_id)
            room = min(rec_room, disk_room)
            size = rec.size
            whole = rec.write(data, room)
            disk.add(device_id, rec.size - size)
            if not whole or room - (rec.size - size) < 2:  # full: not one more sample fits
                ending = (
                    "max_record_bytes"
                    if rec_room <= disk_room
                    else "max_record_disk_bytes_per_device"
                )
                break
    except Exception as exc:
        ending = "error"
        log.warning("device %s: recording ended by an error: %r", log_id, exc)
    finally:
        try:
            rec.close()
        except OSError as exc:
            ending = "error"
            log.warning("device %s: the recording's header: %r", log_id, exc)
        if ending != "closed":
            reason = None if ending in ("idle", "error") else f"recording limit reached ({ending})"
            with contextlib.suppress(Exception):
                await ws.close(1000, reason)
    return ending

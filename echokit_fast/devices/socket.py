"""What every device front end does with its WebSocket: send a frame within the device-send
deadline (``[limits] device_send_timeout_s``; a device that stops reading is dropped) and
close the socket."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from echokit_fast.conversation.device import DeviceGone
from echokit_fast.server.websocket import abort

__all__ = ["close", "send"]

log = logging.getLogger("echokit_fast.device")


async def send(ws: Any, frame: bytes | str, *, timeout: float, log_id: str) -> None:
    """Send one frame (``bytes``: binary, ``str``: text). Raises :class:`DeviceGone` when
    the socket is gone, or when the frame waited ``timeout`` seconds: the device stopped
    reading, so one WARNING names it and the connection is dropped at once (a TCP reset: a
    Close could not be written either)."""
    try:
        if isinstance(frame, str):
            await asyncio.wait_for(ws.send_text(frame), timeout)
        else:
            await asyncio.wait_for(ws.send_bytes(frame), timeout)
    except asyncio.TimeoutError as exc:
        log.warning(
            "device %s: not reading: a frame waited %g s (device_send_timeout_s); "
            "connection dropped",
            log_id,
            timeout,
        )
        abort(ws.scope)
        raise DeviceGone() from exc
    except Exception as exc:  # ClientDisconnected, RuntimeError after close, OSError ...
        raise DeviceGone() from exc


async def close(ws: Any, code: int, reason: str | None = None, *, timeout: float) -> None:
    """A Close frame, or the socket dropped when the device does not read it in ``timeout``."""
    try:
        await asyncio.wait_for(ws.close(code, reason), timeout)
    except asyncio.TimeoutError:
        abort(ws.scope)
    except Exception:  # already closed or gone
        pass

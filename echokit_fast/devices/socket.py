"""What every device front end does with its WebSocket: open the device's session (or refuse
it), read the device's frames, send a frame within the device-send deadline (``[limits]
device_send_timeout_s``; a device that stops reading is dropped), close the socket, and end a
connection however its life ended (:func:`end`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from echokit_fast.conversation.device import DeviceGone
from echokit_fast.conversation.session import Session, SessionManager, SessionsFull
from echokit_fast.server.websocket import abort

__all__ = ["SESSIONS_FULL_REASON", "close", "end", "open_session", "read_frames", "send"]

log = logging.getLogger("echokit_fast.device")

#: the Close reason of a device refused because ``[limits] max_sessions`` sessions are open
SESSIONS_FULL_REASON = "server full: too many device sessions (max_sessions)"


async def open_session(
    manager: SessionManager, ws: Any, device_id: str, *, log_id: str, timeout: float
) -> Session | None:
    """The device's session, once the backends are built; None when the device was refused
    and its socket closed: ``1011`` when the backends cannot be built (logged with the
    traceback), ``1013`` when ``[limits] max_sessions`` sessions are open (try again later)."""
    try:
        await manager.ensure_ready()
    except Exception:
        log.exception("device %s: the backends could not be built", log_id)
        await close(ws, 1011, timeout=timeout)
        return None
    try:
        return manager.session(device_id)
    except SessionsFull as exc:
        log.warning("device %s: connection refused: %s", log_id, exc)
        await close(ws, 1013, SESSIONS_FULL_REASON, timeout=timeout)
        return None


async def send(ws: Any, frame: bytes | str, *, timeout: float, log_id: str) -> None:
    """Send one frame (``bytes``: binary, ``str``: text). Raises :class:`DeviceGone` when
    the socket is gone, or when the frame waited ``timeout`` seconds: the device stopped
    reading, so one WARNING names it and the connection is dropped at once (a TCP reset: a
    Close could not be written either)."""
    try:
        # asyncio.timeout, not wait_for: no task per frame on this per-frame path
        async with asyncio.timeout(timeout):
            if isinstance(frame, str):
                await ws.send_text(frame)
            else:
                await ws.send_bytes(frame)
    except TimeoutError as exc:
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
        async with asyncio.timeout(timeout):
            await ws.close(code, reason)
    except TimeoutError:
        abort(ws.scope)
    except Exception:  # already closed or gone
        pass


async def end(
    conn: Any,
    ws: Any,
    session: Session | None,
    tasks: list[asyncio.Task[Any] | None],
    *,
    timeout: float,
    detached: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The end of a device connection, however it ended (in a ``finally``): its ``tasks``
    (those started; None for one that was not) cancelled and awaited, the connection detached
    from ``session`` (None: it never got one), ``detached()`` run (what the protocol still
    owes the device), the socket closed if still open, and ``conn._ended`` set whatever
    failed on the way (what a connection taking over the device waits for)."""
    try:
        started = [t for t in tasks if t is not None]
        for task in started:
            task.cancel()
        if started:
            await asyncio.wait(started)
        if session is not None:
            await session.detach(conn)
        if detached is not None:
            await detached()
        if conn.alive:
            conn.alive = False
            await close(ws, 1000, timeout=timeout)
    finally:
        conn._ended.set()


async def read_frames(
    conn: Any,
    on_bytes: Callable[[bytes], Awaitable[None]],
    on_text: Callable[[str], Awaitable[None]],
) -> None:
    """Read ``conn.ws`` until the device goes: each binary frame to ``on_bytes``, each text one
    to ``on_text``. A failure handling one frame is logged and reading goes on; DeviceGone
    ends it. The device's disconnect clears ``conn.alive``; ``conn.done`` is set at the end."""
    try:
        while True:
            msg = await conn.ws.receive()
            if msg["type"] == "websocket.disconnect":
                conn.alive = False
                break
            data = msg.get("bytes")
            try:
                if data is not None:
                    await on_bytes(data)
                elif msg.get("text") is not None:
                    await on_text(msg["text"])
            except DeviceGone:
                break
            except Exception:
                log.exception("device %s: error handling a message", conn.log_id)
    finally:
        conn.done.set()

"""The WebSocket plumbing of the remote backends that stream over a WebSocket (``cosyvoice``,
``elevenlabs``): opening a connection, receiving with a deadline, failures as notices.

* :func:`connect` -- a client connection with the given headers and an opening deadline, without
  compression (the reference's client offers none; audio does not compress).
* :func:`recv` -- the next message, or :class:`TimeoutError` after ``timeout`` seconds.
* :func:`dumps` -- a JSON message as the reference's ``serde_json`` writes it (compact, keys
  sorted, non-ASCII as is), so what goes on the wire is the reference's byte for byte.
* :data:`FAILURES` -- what a failed connection raises (caught and given to :func:`error`).
* :func:`error` -- the :class:`~echokit_fast.backends.base.BackendError` for a failed
  connection: a refused handshake by its HTTP status (401/403: the key was refused), a timeout,
  a connection that broke off (``notices.cut``), or "not reachable".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from echokit_fast.backends.base import BackendError
from echokit_fast.backends.http import Notices

__all__ = ["FAILURES", "MAX_MESSAGE", "connect", "dumps", "error", "recv"]

#: The largest message accepted (websockets' default is 1 MiB; a vendor may send the audio of a
#: long sentence as one base64 JSON message).
MAX_MESSAGE = 16 * 2**20

#: A refused or broken connection, a timeout, a protocol violation (TimeoutError is an OSError;
#: asyncio's is another class before Python 3.11).
FAILURES = (OSError, asyncio.TimeoutError, WebSocketException)


async def connect(url: str, headers: Mapping[str, str], *, timeout: float) -> ClientConnection:
    """Open ``url`` with ``headers``; the handshake must complete within ``timeout`` s."""
    return await _connect(
        url,
        additional_headers=dict(headers),
        open_timeout=timeout,
        max_size=MAX_MESSAGE,
        compression=None,
    )


def dumps(message: Any) -> str:
    """``message`` as compact JSON with sorted keys (serde_json's ``json!`` output)."""
    return json.dumps(message, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


async def recv(conn: ClientConnection, timeout: float) -> str | bytes:
    """The next message (text as str, binary as bytes) within ``timeout`` seconds."""
    return await asyncio.wait_for(conn.recv(), timeout)


def error(notices: Notices, what: str, exc: BaseException) -> BackendError:
    """The BackendError for ``exc`` raised while talking to ``what`` (the detail is logged)."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        body = exc.response.body[:300].decode("utf-8", "replace") if exc.response.body else ""
        return notices.error(f"{what}: HTTP {status} {body}".rstrip(), notices.status(status))
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return notices.error(f"{what}: no answer in time", notices.timeout)
    if isinstance(exc, ConnectionClosed) and notices.cut is not None:
        return notices.error(f"{what}: {exc}", notices.cut)
    return notices.error(f"{what}: {exc!r}", notices.unreachable)

"""A stand-in EchoKit-CC service (the bridge to Claude Code of the claude layout): a real
``websockets`` server on a loopback port speaking EchoKit-CC's wire format, in the style of
``tests/ws_standins.py`` (serve it with ``ws_standins.running_ws_server``)::

    cc = ClaudeCC()
    with running_ws_server(cc) as addr:            # "127.0.0.1:PORT"
        cc.answer(output("Two files."), IDLE_MSG)  # the next confirmed Input's answer
        ...
        cc.wait_messages("Confirm")                # (from the test's thread)
        cc.connections[0].texts                    # what the bridge sent, raw

Per connection: ``CreateSession`` is answered with ``session_state`` ``Idle`` (as EchoKit-CC
answers it with its current state); a ``Confirm`` that follows an ``Input`` plays the next
answer of the script (:meth:`ClaudeCC.answer`, per session id or for any): its steps are
messages (dicts, sent as JSON), :class:`Expect` (wait for the client's next message of that
``type``), :data:`CLOSE` (close the socket) and :data:`HANG` (send nothing more). Every message
the client sends is recorded with its arrival time. :meth:`ClaudeCC.push` sends a message to the
newest connection at any time; :meth:`ClaudeCC.close_newest` closes it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = [
    "CLOSE",
    "HANG",
    "IDLE_MSG",
    "ClaudeCC",
    "Expect",
    "error",
    "output",
    "pre_use_tool",
    "state",
    "stop_use_tool",
    "tool",
]


def state(current: dict[str, Any], session: str = "s") -> dict[str, Any]:
    return {"type": "session_state", "session_id": session, "current_state": current}


def output(text: str, *, thinking: bool = False) -> dict[str, Any]:
    return state({"state": "Output", "output": text, "is_thinking": thinking})


def tool(tool_id: str, name: str, args: Any, *, done: bool = False) -> dict[str, Any]:
    return {"id": tool_id, "name": name, "input": args, "done": done}


def pre_use_tool(*tools: dict[str, Any], pending: bool = True) -> dict[str, Any]:
    return state({"state": "PreUseTool", "request": list(tools), "is_pending": pending})


def stop_use_tool(*, is_error: bool = False) -> dict[str, Any]:
    return state({"state": "StopUseTool", "is_error": is_error})


def error(code: str = "invalid_input_for_state", **fields: Any) -> dict[str, Any]:
    return {"type": "session_error", "session_id": "s", "error_code": code, **fields}


IDLE_MSG = {"type": "session_idle", "session_id": "s"}


@dataclass(frozen=True)
class Expect:
    """Wait for the client's next message of ``type``."""

    type: str


CLOSE = "close"
HANG = "hang"


@dataclass
class Connection:
    """One connection the stand-in accepted."""

    path: str
    conn: ServerConnection
    #: what the client sent, raw, with the arrival times (time.monotonic)
    texts: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    #: the connection has ended (either side closed it)
    ended: bool = False

    def types(self) -> list[str]:
        return [json.loads(t)["type"] for t in self.texts]


class ClaudeCC:
    """EchoKit-CC stand-in (see the module docstring)."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self._scripts: dict[str | None, deque[list[Any]]] = {}
        self._seen = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Condition | None = None

    def answer(self, *steps: Any, session: str | None = None) -> None:
        """Queue the answer to the next confirmed Input (of ``session``, or of any)."""
        self._scripts.setdefault(session, deque()).append(list(steps))

    def _next_answer(self, session: str) -> list[Any]:
        for key in (session, None):
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
        return []

    # -- observations (from the test's thread) ----------------------------------------------

    def messages(self) -> list[str]:
        """The type of every message received, over all connections, in order."""
        with self._seen:
            return [t for c in self.connections for t in c.types()]

    def wait_messages(self, kind: str, count: int = 1, timeout: float = 20) -> None:
        def enough() -> bool:
            return sum(t == kind for c in self.connections for t in c.types()) >= count

        with self._seen:
            assert self._seen.wait_for(enough, timeout), f"{count} x {kind} never received"

    def wait_ended(self, path_suffix: str, timeout: float = 20) -> None:
        """Wait until every connection whose path ends with ``path_suffix`` has ended."""

        def ended() -> bool:
            mine = [c for c in self.connections if c.path.endswith(path_suffix)]
            return bool(mine) and all(c.ended for c in mine)

        with self._seen:
            assert self._seen.wait_for(ended, timeout), f"{path_suffix}: still connected"

    def push(self, message: dict[str, Any]) -> None:
        """Send ``message`` to the newest connection (waits until it is written)."""
        self._call(self.connections[-1].conn.send(json.dumps(message)))

    def close_newest(self) -> None:
        """Close the newest connection (waits for the closing handshake)."""
        self._call(self.connections[-1].conn.close())

    def _call(self, coro: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(20)

    # -- the server ---------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        return None

    async def handler(self, conn: ServerConnection) -> None:
        self._loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Condition()
        record = Connection(conn.request.path, conn)
        with self._seen:
            self.connections.append(record)
        session = record.path.rsplit("/", 1)[-1]
        player: asyncio.Task[None] | None = None
        try:
            async for text in conn:
                assert isinstance(text, str)
                with self._seen:
                    record.texts.append(text)
                    record.times.append(time.monotonic())
                    self._seen.notify_all()
                async with self._arrived:
                    self._arrived.notify_all()
                kinds = record.types()
                if kinds[-1] == "CreateSession":
                    await conn.send(json.dumps(state({"state": "Idle"}, session)))
                elif kinds[-1] == "Confirm" and len(kinds) > 1 and kinds[-2] == "Input":
                    steps = self._next_answer(session)
                    player = asyncio.create_task(self._play(record, steps))
        except ConnectionClosed:
            pass
        finally:
            if player is not None:
                player.cancel()
            with self._seen:
                record.ended = True
                self._seen.notify_all()

    async def _play(self, record: Connection, steps: list[Any]) -> None:
        conn = record.conn
        assert self._arrived is not None
        mark = len(record.texts)  # an Expect looks at what arrived after the last message sent
        for step in steps:
            if isinstance(step, Expect):

                def arrived(start: int = mark, kind: str = step.type) -> bool:
                    return kind in record.types()[start:]

                async with self._arrived:
                    await self._arrived.wait_for(arrived)
            elif step == CLOSE:
                await conn.close()
                return
            elif step == HANG:
                return
            else:
                mark = len(record.texts)
                await conn.send(json.dumps(step))

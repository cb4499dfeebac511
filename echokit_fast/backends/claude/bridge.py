"""One device's Claude Code session at EchoKit-CC: :class:`ClaudeBridge`, a
:class:`~echokit_fast.backends.base.Proactive` conversation; :class:`ClaudeBridges`, the layout's
conversation factory (docs/protocol.md#claude-layout).

The bridge keeps the states EchoKit-CC sent (a reader task per socket), each change numbered
(``version``); what was presented to the user is up to the version ``_shown``. Each change is
presented once, in order (docs/protocol.md#claude-layout lists how; a tool request only while
it is the current state); a new device connection has the current state presented again
(:meth:`ClaudeBridge.attached`), as the reference re-sends it.

* :meth:`ClaudeBridge.reply` (the user said something): when Claude Code is idle the words are
  confirmed first (``Choose(text, Confirm/Cancel)``), then sent as ``Input``, a 300 ms pause,
  ``Confirm``, and the changes that follow are presented until it is idle again (the last
  output shown once more). When it is busy the words are not sent: a notification says so.
* :meth:`ClaudeBridge.unprompted`: the changes nobody presented yet, until it is idle.

The socket is opened when a device attaches and whenever a turn needs it and it is not open
(a closed one, ``session_ended`` included, is forgotten: the reference loops on it); it is
never reopened in a loop. Every wait for EchoKit-CC is bounded by ``timeout``
(``[limits] claude_timeout_s``); a closed socket, a ``session_error`` or the timeout during a turn
is a :class:`~echokit_fast.backends.base.BackendError` whose notice the device is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from echokit_fast.backends import http, ws
from echokit_fast.backends.base import BackendError, Choose, Display, Notify, Reply
from echokit_fast.backends.claude import wire

__all__ = [
    "BUSY",
    "CONFIRM_PAUSE_S",
    "CONNECT_TIMEOUT",
    "INPUT_CANCELLED",
    "NOTICES",
    "ClaudeBridge",
    "ClaudeBridges",
]

log = logging.getLogger(__name__)
#: bridges closing in the background (kept referenced until they are done)
_CLOSING: set[asyncio.Task[None]] = set()

#: seconds between ``Input`` and ``Confirm`` (the reference's)
CONFIRM_PAUSE_S = 0.3
#: seconds the opening handshake may take
CONNECT_TIMEOUT = 10.0

NOTICES = http.Notices(
    subject="Claude Code", backend="claude", cut="The connection to Claude Code was lost."
)
SLOW = "Claude Code is still working. You will hear from it when it is done."
ENDED = "Claude Code ended the session. Please try again."
REFUSED = "Claude Code could not take that. Please try again."
#: the notification for words said while Claude Code is busy
BUSY = "Claude Code is busy. Please wait until it is done."
#: the notification for words the user did not confirm (the reference's)
INPUT_CANCELLED = "Input cancelled, please provide input again"
TOOL_OK = "Tool use completed successfully."
TOOL_ERROR = "Tool use stopped with error."
#: the changes of state kept for presenting (older ones are dropped)
KEPT_CHANGES = 64


class ClaudeBridge:
    """One device's Claude Code session (see the module docstring)."""

    def __init__(
        self,
        url: str,
        device_id: str,
        *,
        timeout: float,
        forget: Callable[[], object] | None = None,
    ) -> None:
        self.url = wire.bridge_url(url, device_id)
        self._forget = forget  # drops this bridge from its factory
        self.session = wire.session_id(device_id)  # names the bridge in logs
        self.timeout = timeout
        self.state: dict[str, Any] | None = None  # as EchoKit-CC sent it; None: not yet
        self.version = 0
        self._changes: deque[tuple[int, dict[str, Any]]] = deque(maxlen=KEPT_CHANGES)
        self.last_output = ""
        self._shown = 0
        self._output_due = False  # last_output has not reached the user yet
        self._submitted: set[str] = set()  # tool requests answered
        self._ws: ClientConnection | None = None
        self._fresh = False  # (re)connected, no state received yet
        self._ended = False  # EchoKit-CC ended the session on the current socket
        self._errors = 0
        self._error = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()

    # -- the socket ----------------------------------------------------------------------

    def _live(self) -> bool:
        return self._ws is not None and self._ws.state is State.OPEN

    async def _connect(self) -> None:
        async with self._lock:
            if self._live():
                return
            try:
                conn = await ws.connect(self.url, {}, timeout=CONNECT_TIMEOUT)
                await conn.send(wire.CREATE_SESSION)
            except ws.FAILURES as exc:
                raise ws.error(NOTICES, f"EchoKit-CC {self.url}", exc) from exc
            log.info("claude session %s: connected to %s", self.session, self.url)
            self._ws, self._fresh, self._ended = conn, True, False
            self._spawn(self._read(conn))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro, name=f"echokit-claude-{self.session}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_quietly(self) -> None:
        try:
            await self._connect()
        except BackendError as exc:
            log.warning("claude session %s: %s", self.session, exc)

    async def _read(self, conn: ClientConnection) -> None:
        try:
            async for text in conn:
                if isinstance(text, str):
                    await self._receive(conn, text)
        except ConnectionClosed:
            pass
        finally:
            log.info("claude session %s: EchoKit-CC connection closed", self.session)
            await self._notify()

    async def _receive(self, conn: ClientConnection, text: str) -> None:
        try:
            msg = wire.parse(text)
        except ValueError as exc:
            log.warning("claude session %s: ignoring a message: %s", self.session, exc)
            return
        if msg.state is not None:
            self._set(msg.state)
        elif msg.type == "session_error":
            log.warning("claude session %s: EchoKit-CC error %s", self.session, msg.error)
            self._errors += 1
            self._error = msg.error or ""
        elif msg.type == "session_ended":
            log.info("claude session %s: ended by EchoKit-CC", self.session)
            self._ended = True
            await conn.close()
        else:
            return  # session_pty_output, and types this server does not know
        await self._notify()

    def _set(self, state: dict[str, Any]) -> None:
        self._fresh = False
        if state == self.state:
            return
        self.state = state
        self.version += 1
        self._changes.append((self.version, state))
        if state.get("state") != "PreUseTool":
            self._submitted.clear()
        if state.get("state") == "Output" and not state.get("is_thinking"):
            self.last_output = str(state.get("output", ""))
            self._output_due = True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _send(self, message: str) -> None:
        conn = self._ws
        if conn is None or not self._live():
            raise self._closed()
        try:
            await conn.send(message)
        except ConnectionClosed as exc:
            raise self._closed() from exc

    def _closed(self) -> BackendError:
        if self._ended:
            return NOTICES.error("EchoKit-CC ended the session", ENDED)
        return NOTICES.error("EchoKit-CC closed the connection", NOTICES.cut or "")

    async def _until(self, ready: Callable[[], bool], errors: int) -> None:
        """Wait until ``ready()``, at most ``timeout`` seconds; a closed socket or an error
        since ``errors`` is a BackendError."""

        def done() -> bool:
            return ready() or self._errors != errors or not self._live()

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(done), self.timeout)
            except TimeoutError as exc:
                detail = f"no message from EchoKit-CC in {self.timeout} s"
                raise NOTICES.error(detail, SLOW) from exc
        if self._errors != errors:
            raise NOTICES.error(f"EchoKit-CC error {self._error}", REFUSED)
        if not ready():
            raise self._closed()

    def close(self) -> None:
        """The device's session is dropped (detached too long, or evicted): the bridge is
        forgotten and its socket closed in the background; a later connection of the device
        gets a new one (Claude Code's session lives on at EchoKit-CC)."""
        if self._forget is not None:
            self._forget()
        task = asyncio.get_running_loop().create_task(self.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._ws is not None:
            await self._ws.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- Conversation ----------------------------------------------------------------------

    async def reply(self, user_text: str) -> AsyncIterator[Reply]:
        errors = self._errors
        await self._connect()
        await self._until(lambda: not self._fresh, errors)
        if not wire.is_idle(self.state):
            yield Notify(BUSY)
            return
        confirm = Choose(user_text, wire.CONFIRM_ITEMS)
        yield confirm
        if await confirm.answer != 0:
            yield Notify(INPUT_CANCELLED)
            return
        before = self._shown = self.version
        await self._send(wire.input_message(user_text))
        await asyncio.sleep(CONFIRM_PAUSE_S)
        await self._send(wire.CONFIRM)
        await self._until(lambda: self.version != before, errors)
        async for item in self._present(errors):
            yield item

    def reset(self) -> None:
        """Nothing: Claude Code keeps its context across connections (as the reference)."""

    # -- Proactive -------------------------------------------------------------------------

    def attached(self) -> None:
        self._shown = min(self._shown, self.version - 1)  # the current state is presented again
        if not self._live():
            self._spawn(self._connect_quietly())

    def _unshown(self) -> list[tuple[int, dict[str, Any]]]:
        return [(v, state) for v, state in self._changes if v > self._shown]

    def _news(self) -> bool:
        """Something for the user that was not presented: a change, unless only to idle with
        nothing left to show."""
        if not self._live():
            return False
        unshown = self._unshown()
        return bool(unshown) and (
            self._output_due or any(not wire.is_idle(state) for _, state in unshown)
        )

    def has_notification(self) -> bool:
        return self._news()

    async def wait_unprompted(self) -> None:
        async with self._changed:
            await self._changed.wait_for(self._news)

    async def unprompted(self) -> AsyncIterator[Reply]:
        async for item in self._present(self._errors):
            yield item

    # -- presenting ------------------------------------------------------------------------

    async def _present(self, errors: int) -> AsyncIterator[Reply]:
        """Each change of state, in order as it comes, until Claude Code is idle."""
        while True:
            await self._until(lambda: bool(self._unshown()) or wire.is_idle(self.state), errors)
            unshown = self._unshown()
            if not unshown:
                return  # idle, nothing new
            version, state = unshown[0]
            current = version == self.version
            kind = state.get("state")
            if kind == "PreUseTool":
                if current and state.get("is_pending"):
                    async for item in self._ask_tools(state.get("request") or []):
                        yield item
                self._shown = version  # only once answered: a cancelled question is asked again
                continue
            self._shown = version
            if kind == "Idle":
                if not current:
                    continue  # idle between two changes
                if self.last_output:
                    self._output_due = False
                    yield Display(self.last_output)
                return
            if kind == "Output":
                output = str(state.get("output", ""))
                if state.get("is_thinking"):
                    yield Display(output)
                elif output.strip():
                    self._output_due = self._output_due and output != self.last_output
                    yield output + "\n"  # ends its last sentence: the next output is apart
            elif kind == "StopUseTool":
                yield Display(TOOL_ERROR if state.get("is_error") else TOOL_OK)
            # another state (EchoKit-CC's later Working, ...): nothing to present

    async def _ask_tools(self, request: list[Any]) -> AsyncIterator[Reply]:
        """The first tool request not yet answered: Confirm sends ``Select{0}``, anything else
        ``Cancel`` and the next one is asked; ``AskUserQuestion`` offers its first question's
        options and sends the index chosen."""
        for tool in request:
            if not isinstance(tool, dict) or tool.get("done"):
                continue
            tool_id = str(tool.get("id", ""))
            if tool_id in self._submitted:
                continue
            name, args = str(tool.get("name", "")), tool.get("input")
            if name == "AskUserQuestion":
                try:
                    q = wire.question(args)
                except ValueError as exc:
                    yield Notify(f"Claude requested to use tool `{name}` with invalid args: {exc}")
                    q = None
                if q is None:
                    await self._send(wire.CANCEL)
                    continue
                ask = Choose(q.message, q.items)
                yield ask
                await self._send(wire.select(await ask.answer))
                self._submitted.add(tool_id)
                return
            ask = Choose(wire.tool_prompt(name, args), wire.CONFIRM_ITEMS)
            yield ask
            if await ask.answer == 0:
                await self._send(wire.select(0))
                self._submitted.add(tool_id)
                return
            await self._send(wire.CANCEL)


class ClaudeBridges:
    """The conversation factory of the claude layout: one :class:`ClaudeBridge` per device id,
    kept as long as the device's session (its socket across the device's connections)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.bridges: dict[str, ClaudeBridge] = {}

    def __call__(self, device_id: str) -> ClaudeBridge:
        bridge = self.bridges.get(device_id)
        if bridge is None:
            bridge = self.bridges[device_id] = ClaudeBridge(
                self.url,
                device_id,
                timeout=self.timeout,
                forget=lambda: self.bridges.pop(device_id, None),
            )
        return bridge

    def has_notification(self, device_id: str) -> bool:
        """Claude Code has something for ``device_id`` that has not reached it (the
        reference's ``/proxy/state/{id}``)."""
        bridge = self.bridges.get(device_id)
        return bridge is not None and bridge.has_notification()

    async def aclose(self) -> None:
        bridges, self.bridges = list(self.bridges.values()), {}
        await asyncio.gather(*(b.aclose() for b in bridges), return_exceptions=True)

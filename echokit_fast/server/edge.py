"""The connection edge: what one connection may hold, for how long, and how many there are
(the ``[limits]`` keys of :class:`~echokit_fast.config.LimitsConfig`).

``echokit-fast serve`` runs uvicorn with its own knobs where it has them
(:func:`echokit_fast.server.lifecycle.uvicorn_config`: ``timeout_keep_alive`` from
``keep_alive_s``, ``h11_max_incomplete_event_size`` from ``max_head_bytes``, and its default
WebSocket pings every 20 s, which close a peer that stops answering within 20 s) and with the
two protocol classes below for what it lacks:

* **a header timeout** (``header_timeout_s``): uvicorn arms no timer before a connection's
  first request, and any byte cancels its keep-alive timer, so a client dripping a request
  head holds its socket forever. A head must be complete within ``header_timeout_s`` of the
  connection's opening, or of its first byte on a kept-alive connection; else the connection
  is closed.
* **a body timeout** (``body_timeout_s``): nothing bounds an upload that stops sending. One
  that sends nothing for ``body_timeout_s`` (while the server is ready to read) is answered
  408 and closed.
* **an idle limit for WebSockets** (``ws_idle_s``): pings only prove that the peer is alive.
  A WebSocket that sends no message for ``ws_idle_s`` is closed with 1001 (off with 0).
* **connection caps** (``max_connections``, ``max_connections_per_ip``): uvicorn's
  ``limit_concurrency`` counts only once a request head has arrived, lets WebSocket upgrades
  through, knows no client address and sends no ``Retry-After``; a connection that never sends
  a head is never refused. Here a connection over a cap is answered as soon as its client has
  begun its request, which is not parsed: ``503`` with ``Retry-After`` (a WebSocket upgrade
  gets it before any accept); it is closed when the client closes, or after
  :data:`REFUSAL_LINGER_S`. The per-IP count is of TCP peers: a reverse proxy is one client.
* **bounded logging**: asyncio logs ``socket.accept() out of system resource`` (EMFILE at the
  open-file limit) once per pending connection each time it retries, thousands of lines a
  second; refusals and timeouts can come in floods too. :class:`Reports` writes each kind at
  most once per :data:`REPORT_INTERVAL_S`, the next line counting those left out.
  :func:`fit_open_files` raises the soft open-file limit to what ``max_connections`` needs,
  so the cap, not EMFILE, is what a flood meets.

The HTTP protocol is h11's (``h11_max_incomplete_event_size`` is an h11 setting; httptools
would not take it), the WebSocket one websockets' Sans-I/O implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.server import ServerState

from echokit_fast.config import LimitsConfig
from echokit_fast.server.websocket import WebSocketProtocol

__all__ = [
    "REFUSAL_LINGER_S",
    "REPORT_INTERVAL_S",
    "RETRY_AFTER_S",
    "EdgeHTTP",
    "EdgeState",
    "EdgeWebSocket",
    "Reports",
    "fit_open_files",
    "report_accept_errors",
]

log = logging.getLogger("echokit_fast.server.edge")

#: seconds between two log lines of one kind (refusals, timeouts, accept errors)
REPORT_INTERVAL_S = 10.0
#: what a refusal's ``Retry-After`` says
RETRY_AFTER_S = 5
#: how long a refused connection is kept: for its client to send a request and read the
#: 503 (closing with the request unread would reset the connection and could lose the answer)
REFUSAL_LINGER_S = 2.0
#: open files the process needs besides its connections (models, logs, the event loop ...)
FD_RESERVE = 64
#: what accept(2) fails with when the process or the system is out of descriptors or memory
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Reports:
    """Log lines keyed by their format string, each kind at most once per `interval`
    seconds; the next line of a kind says how many were left out since the last one."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = REPORT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._left_out: Counter[str] = Counter()

    def __call__(self, level: int, msg: str, *args: Any) -> None:
        now = self.clock()
        last = self._last.get(msg)
        if last is not None and now - last < self.interval:
            self._left_out[msg] += 1
            return
        self._last[msg] = now
        left_out = self._left_out.pop(msg, 0)
        if left_out:
            self.logger.log(
                level, msg + " (%d more like it in the last %.0f s)", *args, left_out, now - last
            )
        else:
            self.logger.log(level, msg, *args)


class EdgeState(ServerState):
    """uvicorn's state shared by every connection of a server, with the caps: which
    connections are admitted, from which address."""

    def __init__(self, limits: LimitsConfig) -> None:
        super().__init__()
        self.limits = limits
        #: ``limits.max_connections``, lowered by :func:`fit_open_files` if need be
        self.max_connections = limits.max_connections
        self.report = Reports(log)
        self._peers: dict[asyncio.BaseTransport, str] = {}
        self._per_ip: Counter[str] = Counter()

    @property
    def admitted(self) -> int:
        return len(self._peers)

    def admit(self, transport: asyncio.BaseTransport, ip: str) -> str | None:
        """Count a new connection from `ip`; why it is refused instead (None: admitted)."""
        if len(self._peers) >= self.max_connections:
            return f"too many connections (max_connections = {self.max_connections})"
        if self._per_ip[ip] >= self.limits.max_connections_per_ip:
            per_ip = self.limits.max_connections_per_ip
            return f"too many connections from {ip} (max_connections_per_ip = {per_ip})"
        self._peers[transport] = ip
        self._per_ip[ip] += 1
        return None

    def release(self, transport: asyncio.BaseTransport) -> None:
        """The connection on `transport` has ended (once or more: only the first counts)."""
        ip = self._peers.pop(transport, None)
        if ip is not None:
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]


def _refusal(reason: str) -> bytes:
    body = f"Service Unavailable: {reason}; retry later\n".encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"retry-after: {RETRY_AFTER_S}\r\n"
        "connection: close\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class EdgeHTTP(H11Protocol):
    """uvicorn's h11 protocol with the caps, the header timeout and the body timeout."""

    def __init__(
        self,
        config: Config,
        server_state: EdgeState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.edge = server_state
        #: why the connection is refused ("": admitted)
        self.refused = ""
        self._answered = False
        #: when the request head must be complete (or a refused connection is closed)
        self._deadline: asyncio.TimerHandle | None = None
        #: when a body that stopped coming has stalled too long
        self._stall: asyncio.TimerHandle | None = None
        #: bytes read before this protocol had the connection (a worker's: the supervisor
        #: read the request head to choose it), fed in as the first data received
        self.prefix = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        reason = self.edge.admit(transport, self.client[0] if self.client else "")
        if reason is None:
            self._deadline = self.loop.call_later(
                self.edge.limits.header_timeout_s, self._head_timeout
            )
        else:
            self.refused = reason
            self.edge.report(logging.WARNING, "refusing connections with 503: %s", reason)
            self._deadline = self.loop.call_later(REFUSAL_LINGER_S, transport.close)
        if self.prefix:
            data, self.prefix = self.prefix, b""
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        self.edge.release(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # answered once the client has begun its request, then dropped
            if not self.transport.is_closing() and not self._answered:
                self._answered = True
                self.transport.write(_refusal(self.refused))
                if self.transport.can_write_eof():
                    self.transport.write_eof()
                self._stop_timers()  # from now on, time for the client to read it
                self._deadline = self.loop.call_later(REFUSAL_LINGER_S, self.transport.close)
            return
        super().data_received(data)
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed, or upgraded to a WebSocket
        state = self.conn.their_state
        if state is h11.IDLE and self._deadline is None and self.conn.trailing_data[0]:
            # the first bytes of a request on a kept-alive connection
            self._deadline = self.loop.call_later(
                self.edge.limits.header_timeout_s, self._head_timeout
            )
        elif state is not h11.IDLE and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if state is h11.SEND_BODY:  # progress: the stall deadline starts again
            if self._stall is not None:
                self._stall.cancel()
            self._stall = self.loop.call_later(self.edge.limits.body_timeout_s, self._body_timeout)
        elif self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a malformed request with a 400 at once, even when an earlier request
        # of the connection (pipelined) is still being answered: h11 then refuses that answer
        # (a traceback per connection). The 400 ends the connection; the running answer is
        # dropped, or, once it has begun, the connection is just closed.
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            if cycle.response_started:
                self.transport.close()
                return
        super().send_400_response(msg)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._stop_timers()  # the WebSocket protocol takes over the connection
        super().handle_websocket_upgrade(event)

    def _stop_timers(self) -> None:
        for timer in (self._deadline, self._stall):
            if timer is not None:
                timer.cancel()
        self._deadline = self._stall = None

    def _head_timeout(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.edge.report(
                logging.INFO,
                "closed connections that sent no complete request head within %g s "
                "(header_timeout_s)",
                self.edge.limits.header_timeout_s,
            )
            self.transport.close()

    def _body_timeout(self) -> None:
        self._stall = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the application is not reading: not the client's stall
            self._stall = self.loop.call_later(self.edge.limits.body_timeout_s, self._body_timeout)
            return
        timeout = self.edge.limits.body_timeout_s
        self.edge.report(
            logging.INFO, "closed uploads that sent nothing for %g s (body_timeout_s)", timeout
        )
        if self.cycle is not None and not self.cycle.response_started:
            body = f"Request Timeout: the body stalled for {timeout:g} s\n".encode()
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            for event in (
                h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
            # the answer is given: what the application still sends goes nowhere (h11 would
            # refuse a second response before connection_lost says the peer is gone)
            self.cycle.disconnected = True
        # connection_lost tells the application (its receive gets http.disconnect, its
        # answer goes nowhere)
        self.transport.close()


class EdgeWebSocket(WebSocketProtocol):
    """:class:`~echokit_fast.server.websocket.WebSocketProtocol` (abort, quiet invalid UTF-8)
    with the idle limit and the caps' count."""

    def __init__(
        self,
        config: Config,
        server_state: EdgeState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.edge = server_state
        self._last_message = self.loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_close: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.edge.limits.ws_idle_s > 0:
            self._idle_timer = self.loop.call_later(self.edge.limits.ws_idle_s, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.edge.release(self.transport)
        super().connection_lost(exc)

    def send_receive_event_to_app(self) -> None:
        self._last_message = self.loop.time()  # a whole message, not a ping or a pong
        super().send_receive_event_to_app()

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.close_sent or self.transport.is_closing() or self.initial_response is not None:
            return
        idle = self.edge.limits.ws_idle_s
        quiet = self.loop.time() - self._last_message
        if quiet < idle:
            self._idle_timer = self.loop.call_later(idle - quiet, self._idle_check)
            return
        self.edge.report(
            logging.INFO, "closed WebSockets that sent no message for %g s (ws_idle_s)", idle
        )
        self._idle_close = self.loop.create_task(self._close_idle(f"idle for {idle:g} s"))

    async def _close_idle(self, reason: str) -> None:
        # uvicorn's own close (the application's receive gets the disconnect); before an
        # accept, uvicorn answers it with 403
        message = {"type": "websocket.close", "code": 1001, "reason": reason}
        with contextlib.suppress(ClientDisconnected):
            await self.send(message)  # type: ignore[arg-type]


def fit_open_files(edge: EdgeState) -> None:
    """Raise the soft open-file limit to what ``max_connections`` needs (two descriptors per
    connection, its own and one to a backend while it is served, plus :data:`FD_RESERVE`),
    as far as the hard limit allows; if that is not enough, lower the cap to fit, with a
    warning, so that a flood meets the cap's 503 rather than accept(2)'s EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * edge.max_connections + FD_RESERVE
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and soft < want:
        raised = want if hard == unlimited else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft != unlimited and soft < want:
        cap = max(1, (soft - FD_RESERVE) // 2)
        log.warning(
            "the open-file limit (%d) is too low for max_connections = %d: at most %d "
            "connections are accepted (raise `ulimit -n`, or lower [limits] max_connections)",
            soft,
            edge.max_connections,
            cap,
        )
        edge.max_connections = cap


def report_accept_errors(loop: asyncio.AbstractEventLoop, edge: EdgeState) -> None:
    """Route the loop's "out of system resource" accept errors through ``edge.report``;
    every other error goes to the handler there was (asyncio's default one)."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS:
            edge.report(
                logging.ERROR,
                "cannot accept connections: %s (%d open; retrying every second)",
                exc.strerror,
                edge.admitted,
            )
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)

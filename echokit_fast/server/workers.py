"""Serving on more than one process: ``echokit-fast serve --workers N``.

One Python process runs one event loop, and at a few hundred devices that loop (VAD batches,
Opus, the backends' requests, the sockets) is what a turn waits for: a second core stays
idle. With ``--workers N`` the command starts a **supervisor** that listens on the address
and N **workers**, each a whole server (its own engines, device sessions, backend clients),
and hands every connection to one of them:

* **by device id**: a device's session (its conversation history, its running turn, its
  record files) lives in the worker that holds it, so every request about a device goes to
  the same worker: ``zlib.crc32(id) % N`` of the id in the path (:data:`ID_PREFIXES`: the
  EchoKit WebSockets, record mode, downloads, ``/proxy/state``, the xiaozhi push) or in the
  xiaozhi ``Device-Id`` header (or its ``device-id`` query parameter). A device that
  reconnects finds its session. Any other request (the HTTP APIs, the console) goes to the
  next worker in turn.
* **how**: the supervisor accepts the connection, reads its request head (at most
  ``[limits] max_head_bytes``, for at most ``header_timeout_s``: what it read is handed on
  too, so the worker's own limits still apply), and passes the socket with those bytes over a
  Unix ``SOCK_SEQPACKET`` pair (``SCM_RIGHTS``); the worker feeds the bytes to the same
  protocol classes a listening server would make (:mod:`echokit_fast.server.edge`). The
  kernel's ``SO_REUSEPORT`` balancing was not used: it spreads connections by address, and
  only a process that has read the request knows the device.
* **HTTP keep-alive is off in a worker** (``Connection: close`` on each answer): a kept-alive
  connection would take its next request, maybe about another device, to the same worker.
  WebSockets, one per device, are not affected.
* **readiness**: each worker tells the supervisor when its engines are loaded; the
  supervisor tells every worker when all are (``GET /ready`` answers 200 on any worker
  only then). A worker that fails to load stops the whole server (exit 1, its error
  printed); one that dies later is started again (its devices reconnect to the new one; a
  second death before it is ready again stops the server).
* **signals**: the workers run in their own session (a terminal's Ctrl-C reaches only the
  supervisor), and the supervisor passes on each SIGTERM/SIGINT: the first drains every
  worker as one server drains (:class:`~echokit_fast.server.lifecycle.Server`), a second
  SIGINT exits at once. A worker whose supervisor is gone (its channel closed) drains too.
* **metrics**: ``/metrics`` (any worker) sums every worker's, through prometheus_client's
  multiprocess mode (the supervisor gives the workers a fresh ``PROMETHEUS_MULTIPROC_DIR``
  and removes it at exit).

What stays per worker: the status page and its feed (they show the answering worker's
devices and turns, and say which worker it is), and the connection caps of ``[limits]``
(each worker admits ``max_connections / N``; ``max_connections_per_ip`` counts within a
worker). Not with ``--workers``: TLS (the supervisor must read the request: terminate TLS in
a proxy in front) and ``--config-write`` (the editor applies a config to one process).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from echokit_fast.config import LimitsConfig

__all__ = [
    "ID_PREFIXES",
    "Channel",
    "Supervisor",
    "WorkerSpec",
    "close_connections",
    "route_key",
]

log = logging.getLogger("echokit_fast.server.workers")

#: paths whose next segment is a device id
ID_PREFIXES = (
    "/ws/",
    "/v2/stable_ws/",
    "/v1/record/",
    "/downloads/download/",
    "/downloads/list/",
    "/proxy/state/",
    "/xiaozhi/devices/",
)
#: the xiaozhi routes that name their device in a header (or query parameter)
XIAOZHI_PREFIX = "/xiaozhi/"
#: the largest message of a channel: a request head and what came with it
MAX_MESSAGE = 1 << 18
#: message kinds: a connection (supervisor to worker; the socket rides along), "every worker
#: is ready" / "one is not" (supervisor to worker), "my engines are loaded" (worker to
#: supervisor)
CONNECTION, ALL_READY, NOT_ALL_READY, READY = b"C", b"R1", b"R0", b"ready"


def route_key(head: bytes) -> str | None:
    """The device id that the request starting with `head` is about (None: any worker)."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    path, _, query = parts[1].decode("latin-1").partition("?")
    for prefix in ID_PREFIXES:
        if path.startswith(prefix):
            return unquote(path[len(prefix) :].split("/", 1)[0]) or None
    if not path.startswith(XIAOZHI_PREFIX):
        return None
    for header in rest.split(b"\r\n"):
        name, colon, value = header.partition(b":")
        if colon and name.strip().lower() == b"device-id":
            return value.strip().decode("latin-1") or None
    given = parse_qs(query).get("device-id")
    return given[0] if given else None


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told on its command line (``--worker INDEX:COUNT:FD``)."""

    index: int
    count: int
    fd: int

    @classmethod
    def parse(cls, text: str) -> WorkerSpec:
        index, count, fd = (int(part) for part in text.split(":"))
        if not 0 <= index < count:
            raise ValueError(f"worker {index} of {count}")
        return cls(index, count, fd)

    def __str__(self) -> str:
        return f"{self.index}:{self.count}:{self.fd}"


class Channel:
    """One end of a supervisor-worker pair: messages, each with at most one socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def send(self, message: bytes, fd: int | None = None) -> None:
        """Send `message` (with the socket `fd`), waiting while the peer's queue is full.
        OSError when the peer is gone."""
        loop = asyncio.get_running_loop()
        fds = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        while True:
            try:
                self.sock.sendmsg([message], fds)
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self.sock, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.sock)

    def receive(self) -> tuple[bytes, socket.socket | None] | None:
        """The next message and its socket; None when none is waiting. EOFError when the
        peer is gone."""
        try:
            message, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
        except BlockingIOError:
            return None
        except ConnectionResetError:
            raise EOFError from None
        if not message and not fds:
            raise EOFError
        conn = socket.socket(fileno=fds[0]) if fds else None
        return message, conn

    def close(self) -> None:
        self.sock.close()


def close_connections(app: Callable) -> Callable:
    """`app` answering every HTTP request with ``Connection: close`` (a worker's: see the
    module's text); WebSockets pass as they are."""

    async def closing(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_closing(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return await app(scope, receive, send_closing)

    return closing


@dataclass
class _Worker:
    index: int
    channel: Channel | None = None
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    #: times it was started
    starts: int = 0


class Supervisor:
    """The process that listens and hands connections to `count` workers, each started as
    ``python -m echokit_fast <argv> --worker INDEX:COUNT:FD``."""

    def __init__(
        self,
        argv: list[str],
        host: str,
        port: int,
        count: int,
        limits: LimitsConfig,
        *,
        stop_timeout: float,
        ready_message: str,
    ) -> None:
        self.argv = argv
        self.host, self.port = host, port
        self.limits = limits
        #: how long a drained worker may take to exit before it is killed
        self.stop_timeout = stop_timeout
        #: logged once every worker is ready (what one server logs when it is)
        self.ready_message = ready_message
        self.workers = [_Worker(i) for i in range(count)]
        self._next = 0
        self._draining = False
        self._signals = 0
        self._failed: int | None = None
        self._done: asyncio.Event | None = None
        self._handing: set[asyncio.Task[None]] = set()
        self._metrics_dir = ""

    def run(self) -> int:
        """Serve until a signal (every worker drained: 0) or a worker that cannot start (its
        exit status, at least 1)."""
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        listener = socket.create_server(
            (self.host, self.port),
            family=socket.AF_INET6 if ":" in self.host else socket.AF_INET,
            backlog=4096,
        )
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._metrics_dir = tempfile.mkdtemp(prefix="echokit-metrics-")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            "Uvicorn running on http://%s:%d (%d worker processes; Press CTRL+C to quit)",
            self.host,
            self.port,
            len(self.workers),
        )
        watchers = [asyncio.create_task(self._keep(w)) for w in self.workers]
        accepting = asyncio.create_task(self._accept(listener))
        try:
            await self._done.wait()
        finally:
            accepting.cancel()
            listener.close()
            for task in self._handing:
                task.cancel()
            await asyncio.gather(accepting, *self._handing, return_exceptions=True)
            await self._stop_all()
            await asyncio.gather(*watchers, return_exceptions=True)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        if self._failed is not None:
            return self._failed
        log.info("every worker has stopped")
        return 0

    # -- workers ---------------------------------------------------------------------------

    async def _start(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        spec = WorkerSpec(worker.index, len(self.workers), theirs.fileno())
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "echokit_fast",
                *self.argv,
                "--worker",
                str(spec),
                pass_fds=[theirs.fileno()],
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
                env=env,
            )
        finally:
            theirs.close()
        worker.channel = Channel(ours)
        worker.ready = False
        worker.starts += 1
        asyncio.get_running_loop().add_reader(ours, self._on_message, worker)

    async def _keep(self, worker: _Worker) -> None:
        """Run `worker`, starting it again when it dies after being ready."""
        while not self._draining:
            await self._start(worker)
            assert worker.process is not None
            code = await worker.process.wait()
            was_ready = worker.ready
            self._lost(worker)
            if self._draining:
                return
            if not was_ready:
                log.error("worker %d exited (status %d) before it was ready", worker.index, code)
                self._fail(code or 1)
                return
            log.error("worker %d exited (status %d): starting it again", worker.index, code)
            await self._tell_all(NOT_ALL_READY)

    def _lost(self, worker: _Worker) -> None:
        if worker.channel is not None:
            asyncio.get_running_loop().remove_reader(worker.channel.sock)
            worker.channel.close()
            worker.channel = None
        worker.ready = False
        if worker.process is not None:
            with contextlib.suppress(Exception):  # metrics of a dead worker's live gauges
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(worker.process.pid, self._metrics_dir)

    def _on_message(self, worker: _Worker) -> None:
        assert worker.channel is not None
        try:
            got = worker.channel.receive()
        except EOFError:  # it is exiting: _keep sees the exit
            asyncio.get_running_loop().remove_reader(worker.channel.sock)
            return
        if got is None:
            return
        message, conn = got
        if conn is not None:
            conn.close()
        if message == READY:
            worker.ready = True
            if all(w.ready for w in self.workers):
                log.info("%s (%d workers)", self.ready_message, len(self.workers))
                task = asyncio.create_task(self._tell_all(ALL_READY))
                self._handing.add(task)
                task.add_done_callback(self._handing.discard)

    async def _tell_all(self, message: bytes) -> None:
        for worker in self.workers:
            if worker.channel is not None:
                with contextlib.suppress(OSError):
                    await worker.channel.send(message)

    async def _stop_all(self) -> None:
        running = [w.process for w in self.workers if w.process and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.stop_timeout):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.error(
                        "worker pid %d did not stop in %g s: killed", process.pid, self.stop_timeout
                    )
                    process.kill()
            await asyncio.gather(*(p.wait() for p in running))

    def _fail(self, code: int) -> None:
        if self._failed is None:
            self._failed = code
        self._draining = True
        assert self._done is not None
        self._done.set()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:  # a second signal: passed on (SIGINT: the workers exit now)
            for worker in self.workers:
                if worker.process is not None and worker.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.send_signal(sig)
            return
        log.info("%s: draining every worker", signal.Signals(sig).name)
        self._draining = True
        assert self._done is not None
        self._done.set()

    # -- connections -----------------------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and the like: the backlog waits meanwhile
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._hand(conn))
            self._handing.add(task)
            task.add_done_callback(self._handing.discard)

    async def _hand(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        head = b""
        try:
            async with asyncio.timeout(self.limits.header_timeout_s):
                while b"\r\n\r\n" not in head and len(head) < self.limits.max_head_bytes:
                    data = await loop.sock_recv(conn, 65536)
                    if not data:  # gone before its request
                        conn.close()
                        return
                    head += data
        except TimeoutError:
            pass  # handed on as it is: the worker's header timeout closes it
        except OSError:  # reset before its request
            conn.close()
            return
        except asyncio.CancelledError:  # the supervisor stops
            conn.close()
            raise
        try:
            worker = self._pick(route_key(head))
            if worker is not None and worker.channel is not None:
                with contextlib.suppress(OSError):
                    await worker.channel.send(CONNECTION + head, conn.fileno())
        finally:
            conn.close()  # the worker holds its own copy now

    def _pick(self, key: str | None) -> _Worker | None:
        """The worker of device `key` (None: the next in turn), None while it is restarting
        (the connection is closed: a device reconnects)."""
        if key is None:
            self._next = (self._next + 1) % len(self.workers)
            index = self._next
        else:
            index = zlib.crc32(key.encode()) % len(self.workers)
        worker = self.workers[index]
        return worker if worker.channel is not None else None

"""Test harness importable from tests and benches: a real uvicorn server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import uvicorn

from echokit_fast.config import Config, parse_config
from echokit_fast.server.lifecycle import READY_MESSAGE
from echokit_fast.server.state import AppState
from echokit_fast.server.websocket import WebSocketProtocol

#: a config without a local engine or an LLM (the ``[gemini]`` layout): an app on it loads
#: nothing at start-up but the Silero VAD, probes no LLM and opens no socket until a device talks
API_ONLY = 'addr = "127.0.0.1:0"\n[gemini]\napi_key = "unused"\n'


def api_state(config: Config | None = None, **kw) -> AppState:
    """The state of an app for the HTTP API tests: on :data:`API_ONLY` unless given `config`,
    so the lifespan does not load Whisper and hibari in the background for every test (the
    tests install their engines, or the routes build them on first use)."""
    if config is None:
        config = parse_config(API_ONLY, log_issues=False).config
    return AppState(config, **kw)


class LoopbackServer:
    """A uvicorn server for `app` on 127.0.0.1 in a background thread (see
    :func:`running_server`); :meth:`stop` is :meth:`signal` then :meth:`join`, so that several
    can be told to stop at once and then waited for together."""

    def __init__(self, app, *, sndbuf: int | None = None) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto is TCP
        # (proto 0 = "default" is skipped), and Nagle + delayed ACKs stall small frames by ~40 ms.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.sock = sock
        self.addr = f"127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws=WebSocketProtocol,
            ws_per_message_deflate=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()

    def signal(self) -> None:
        self.server.should_exit = True

    def join(self) -> None:
        self.thread.join(timeout=30)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError("the test server did not stop within 30 s")

    def stop(self) -> None:
        self.signal()
        self.join()


@contextmanager
def running_server(app, *, sndbuf: int | None = None) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 in a background thread; yield its base URL.

    The listening socket is bound here before the server starts, so a client may
    connect at once: the kernel queues the connection until uvicorn accepts it
    (no readiness polling, no sleeps). `sndbuf`: SO_SNDBUF of the listening socket, which
    the accepted connections inherit (the kernel's send buffer then stays that small).
    """
    server = LoopbackServer(app, sndbuf=sndbuf)
    try:
        yield server.addr
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


READY_LIMIT_S = 120


@contextmanager
def serve_process(
    *args: str, env: dict[str, str] | None = None, log: BinaryIO | None = None
) -> Iterator[ServeProcess]:
    """Run `python -m echokit_fast serve *args` in a child process until the server logs
    that it is ready (it listens earlier, while the engines load); yield the process and
    everything it printed so far; stop it afterwards (SIGTERM: it drains and exits).
    Everything it prints is also written to `log` when given.

    Waiting on the readiness line (not a sleep) is the synchronisation; a server that exits
    or never gets ready fails with its output.
    """
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "echokit_fast", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
    )
    # a server that never gets ready (or prints nothing) is killed: the read loop then ends
    watchdog = threading.Timer(READY_LIMIT_S, proc.kill)
    watchdog.start()
    try:
        seen = b""
        assert proc.stdout is not None
        for line in proc.stdout:
            seen += line
            # both, in either order: it listens, and the engines are loaded
            if b"Uvicorn running" in seen and READY_MESSAGE.encode() in seen:
                break
        else:
            what = "exited" if watchdog.is_alive() else f"not ready in {READY_LIMIT_S} s"
            raise AssertionError(f"serve {what}:\n{seen.decode(errors='replace')}")
        watchdog.cancel()
        # keep draining its output so a chatty server never blocks on a full pipe
        if log is not None:
            log.write(seen)
        threading.Thread(target=_drain, args=(proc.stdout, log), daemon=True).start()
        yield ServeProcess(proc, seen)
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=30)


def _drain(stream: BinaryIO, log: BinaryIO | None) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        if log is not None:
            log.write(chunk)
            log.flush()


@dataclass
class ServeProcess:
    proc: subprocess.Popen
    #: what the server printed up to its readiness line
    output: bytes

    def pids(self) -> list[int]:
        """The server's processes: its own, and its workers' with ``--workers`` (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return [self.proc.pid, *(int(p) for p in f.read().split())]

    def _status(self, key: str, pid: int | None = None) -> int:
        pid = self.proc.pid if pid is None else pid
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {key} for pid {pid}")

    def rss_bytes(self) -> int:
        """The server's resident set size now, its workers' included (Linux /proc)."""
        return sum(self._status("VmRSS", pid) for pid in self.pids()) * 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time the server (and its workers) have used so far (Linux
        /proc)."""
        total = 0
        for pid in self.pids():
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def threads(self) -> int:
        """The server's thread count now."""
        return self._status("Threads")

    def open_fds(self) -> int:
        """The server's open file descriptors now (sockets included)."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@contextmanager
def spawned_serve(*args: str, env: dict[str, str] | None = None) -> Iterator[bytes]:
    """:func:`serve_process`, yielding only what the server printed up to its readiness."""
    with serve_process(*args, env=env) as sp:
        yield sp.output

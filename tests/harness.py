"""Test harness importable from tests and benches: a real uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 in a background thread; yield its base URL.

    The listening socket is bound here before the server starts, so a client may
    connect at once: the kernel queues the connection until uvicorn accepts it
    (no readiness polling, no sleeps).
    """
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto is TCP
    # (proto 0 = "default" is skipped), and Nagle + delayed ACKs stall small frames by ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the test server did not stop within 30 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def spawned_serve(*args: str, env: dict[str, str] | None = None) -> Iterator[bytes]:
    """Run `python -m echokit_fast serve *args` in a child process until the server prints
    its own readiness line; yield everything it printed so far; stop it afterwards.

    Waiting on the readiness line (not a sleep) is the synchronisation; a server that exits
    or never gets ready fails with its output.
    """
    import os
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "echokit_fast", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        seen = b""
        assert proc.stdout is not None
        for line in proc.stdout:
            seen += line
            if b"Uvicorn running" in line:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"serve not ready in 120 s:\n{seen.decode(errors='replace')}")
        else:
            raise AssertionError(f"serve exited:\n{seen.decode(errors='replace')}")
        yield seen
    finally:
        proc.terminate()
        proc.wait(timeout=30)

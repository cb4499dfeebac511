"""Shared fixtures: spec data paths and real servers on loopback ports."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SPEC = ROOT.parent / "shared" / "spec"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    if not SPEC.is_dir():
        pytest.fail(f"the shared spec folder is missing: {SPEC}")
    return SPEC


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 in a background thread; yield its base URL.

    The listening socket is bound here before the server starts, so a client may
    connect at once: the kernel queues the connection until uvicorn accepts it
    (no readiness polling, no sleeps).
    """
    # proto IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP; without it every keep-alive response waits ~40 ms for a delayed ACK.
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


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """`serve(app) -> "127.0.0.1:PORT"`; every server started is stopped after the test."""
    stack: list = []

    def start(app) -> str:
        cm = running_server(app)
        addr = cm.__enter__()
        stack.append(cm)
        return addr

    yield start
    while stack:
        stack.pop().__exit__(None, None, None)

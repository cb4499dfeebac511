"""The connection edge of `echokit-fast serve` (echokit_fast/server/edge.py): the header, body
and WebSocket idle timeouts, the connection caps, the request-line limit of a WebSocket
handshake, and the bounded logging of accept errors.

The servers are real `echokit-fast serve` processes on loopback with short `[limits]`
timeouts and small caps; the clients are raw sockets (or http.client / websockets), bound to
distinct loopback addresses (127.0.0.2, .3, ...) where the per-IP cap matters.
"""

from __future__ import annotations

import asyncio
import errno
import http.client
import logging
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import websockets
from harness import free_port, serve_process
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from echokit_fast.config import LimitsConfig
from echokit_fast.server import edge

#: how long a test waits for what a short timeout must bring (generous: CPU speed, load)
WAIT = 10.0

PIPELINE = """
addr = "{addr}"
[asr]
platform = "openai"
url = "http://127.0.0.1:{dead}/v1/audio/transcriptions"
[tts]
platform = "stream_gsv"
url = "http://127.0.0.1:{dead}/v1/audio/stream_speech"
speaker = "a"
[llm]
platform = "openai_chat"
url = "http://127.0.0.1:{dead}/v1/chat/completions"
history = 1
[limits]
{limits}
"""


@contextmanager
def edge_server(tmp_path, limits: str) -> Iterator[str]:
    """`echokit-fast serve` on a remote pipeline (nothing listens at its backends: only the
    edge is exercised) with `limits` in its ``[limits]``; yields ``host:port``."""
    addr = f"127.0.0.1:{free_port()}"
    cfg = tmp_path / "config.toml"
    cfg.write_text(PIPELINE.format(addr=addr, dead=free_port(), limits=limits))
    with serve_process(str(cfg)):
        yield addr


@pytest.fixture(scope="module")
def timeouts(tmp_path_factory) -> Iterator[str]:
    limits = "header_timeout_s = 0.5\nbody_timeout_s = 0.5\nws_idle_s = 1\n"
    with edge_server(tmp_path_factory.mktemp("timeouts"), limits) as addr:
        yield addr


@pytest.fixture(scope="module")
def capped(tmp_path_factory) -> Iterator[str]:
    limits = "max_connections = 4\nmax_connections_per_ip = 2\nkeep_alive_s = 60\n"
    with edge_server(tmp_path_factory.mktemp("capped"), limits) as addr:
        yield addr


def _hp(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def _read_all(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Everything the server sends until it closes (a TimeoutError if it does not)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


# -- timeouts -------------------------------------------------------------------------------


def test_slowloris_connections_are_closed_by_the_header_timeout(timeouts) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000  # never finished
    socks = [socket.create_connection(_hp(timeouts)) for _ in range(5)]
    t0 = time.monotonic()
    closed: dict[socket.socket, bytes] = {}
    served = None
    try:
        for i in range(len(head)):  # one byte each, every 50 ms, until the server closes them
            for s in socks:
                if s not in closed:
                    try:
                        s.send(head[i : i + 1])
                    except OSError:  # reset by the closed end
                        closed[s] = b""
            readable, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.05)
            for s in readable:
                try:
                    closed[s] = s.recv(4096) or b""
                except OSError:
                    closed[s] = b""
            if served is None:  # meanwhile a whole request is answered
                served = httpx.get(f"http://{timeouts}/health", timeout=WAIT).status_code
            if len(closed) == len(socks) or time.monotonic() - t0 > WAIT:
                break
        took = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    assert len(closed) == len(socks), f"{len(socks) - len(closed)} never closed in {WAIT} s"
    assert set(closed.values()) == {b""}  # closed without an answer
    assert took >= 0.45, took  # not before the header timeout
    assert served == 200


def test_an_upload_that_stalls_is_answered_408_and_closed(timeouts) -> None:
    body = b"--b\r\n" + b"x" * 1000
    with socket.create_connection(_hp(timeouts)) as s:
        s.sendall(
            b"POST /v1/audio/vad HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 2000\r\n\r\n"
        )
        for i in range(0, 160, 10):  # ~1.5 s of progress, three times body_timeout_s: kept
            time.sleep(0.1 if i else 0)
            s.sendall(body[i : i + 10])
        t0 = time.monotonic()  # then the upload stalls
        answer = _read_all(s)
        took = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body stalled for 0.5 s" in answer
    assert took >= 0.45, took


def test_a_websocket_that_sends_nothing_is_closed_after_ws_idle_s(timeouts) -> None:
    async def run() -> tuple[int | None, str | None, float]:
        async with websockets.connect(f"ws://{timeouts}/v1/audio/realtime_vad") as ws:
            for _ in range(10):  # a message every 0.2 s for 2 s: twice ws_idle_s, kept open
                await asyncio.sleep(0.2)
                await ws.send("keep")
            t0 = time.monotonic()
            with pytest.raises(ConnectionClosed):  # then silence (pongs do not count)
                await asyncio.wait_for(ws.recv(), WAIT)
            return ws.close_code, ws.close_reason, time.monotonic() - t0

    code, reason, took = asyncio.run(run())
    assert (code, reason) == (1001, "idle for 1 s")
    assert took >= 0.95, took


def test_a_handshake_line_over_8192_bytes_is_answered_414(timeouts) -> None:
    path = "/ws/dev?x=" + "a" * 9000
    with socket.create_connection(_hp(timeouts)) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:200]


# -- connection caps ------------------------------------------------------------------------


def _held(addr: str, source: str) -> http.client.HTTPConnection:
    """A kept-alive connection from `source` that has been served once (so it was admitted)."""
    conn = http.client.HTTPConnection(*_hp(addr), source_address=(source, 0), timeout=WAIT)
    assert _get(conn) == (200, None)
    return conn


def _get(conn: http.client.HTTPConnection) -> tuple[int, str | None]:
    conn.request("GET", "/health")
    r = conn.getresponse()
    body = r.read().decode()
    if r.status == 503:
        return r.status, r.getheader("Retry-After") + " " + body
    return r.status, None


def test_connection_caps_refuse_cleanly_while_admitted_connections_are_served(capped) -> None:
    held = [_held(capped, "127.0.0.2"), _held(capped, "127.0.0.2")]
    try:
        # a third from the same address: over max_connections_per_ip (2)
        third = http.client.HTTPConnection(*_hp(capped), source_address=("127.0.0.2", 0))
        status, detail = _get(third)
        third.close()
        assert status == 503 and detail is not None
        assert detail.startswith("5 ") and "max_connections_per_ip = 2" in detail
        # another address is served; with it and one more, max_connections (4) is reached
        held += [_held(capped, "127.0.0.3"), _held(capped, "127.0.0.4")]
        late = http.client.HTTPConnection(*_hp(capped), source_address=("127.0.0.5", 0))
        status, detail = _get(late)
        late.close()
        assert status == 503 and detail is not None and "max_connections = 4" in detail
        # a WebSocket upgrade over the cap: 503 before any accept
        sock = socket.socket()
        sock.bind(("127.0.0.5", 0))
        sock.connect(_hp(capped))
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(f"ws://{capped}/v1/audio/realtime_vad", sock=sock, open_timeout=WAIT)
        sock.close()
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "5"
        # the admitted connections are still served
        assert [_get(c) for c in held] == [(200, None)] * 4
        # once one closes, a newcomer gets in (the server notices the close soon after)
        held.pop().close()
        deadline = time.monotonic() + WAIT
        while True:
            newcomer = http.client.HTTPConnection(*_hp(capped), source_address=("127.0.0.5", 0))
            status, _ = _get(newcomer)
            newcomer.close()
            if status == 200 or time.monotonic() > deadline:
                break
        assert status == 200
    finally:
        for c in held:
            c.close()


# -- logging, open files (units) ------------------------------------------------------------


def test_accept_errors_are_logged_at_a_bounded_rate(caplog) -> None:
    now = [100.0]
    state = edge.EdgeState(LimitsConfig())
    state.report = edge.Reports(logging.getLogger(edge.log.name), clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        edge.report_accept_errors(loop, state)
        emfile = OSError(errno.EMFILE, "Too many open files")
        context = {"message": "socket.accept() out of system resource", "exception": emfile}
        with caplog.at_level(logging.INFO):
            for _ in range(2048):  # what asyncio's accept loop reports in one go
                loop.call_exception_handler(context)
            now[0] += edge.REPORT_INTERVAL_S
            loop.call_exception_handler(context)
            loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    ours = [r.getMessage() for r in caplog.records if r.name == edge.log.name]
    assert ours == [
        "cannot accept connections: Too many open files (0 open; retrying every second)",
        "cannot accept connections: Too many open files (0 open; retrying every second) "
        "(2047 more like it in the last 10 s)",
    ]
    others = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert others == ["something else"]  # every other error still reaches asyncio's handler


class _Limits:
    """A stand-in for the `resource` module with given open-file limits."""

    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft: int, hard: int) -> None:
        self.limits = (soft, hard)

    def getrlimit(self, _which: int) -> tuple[int, int]:
        return self.limits

    def setrlimit(self, _which: int, limits: tuple[int, int]) -> None:
        self.limits = limits


def test_the_open_file_limit_is_raised_for_max_connections_or_the_cap_lowered(
    monkeypatch, caplog
) -> None:
    fake = _Limits(1024, 1_048_576)
    monkeypatch.setattr(edge, "resource", fake)
    state = edge.EdgeState(LimitsConfig(max_connections=1000))
    edge.fit_open_files(state)
    assert fake.limits == (2 * 1000 + edge.FD_RESERVE, 1_048_576)
    assert state.max_connections == 1000

    fake.limits = (1024, 1024)  # a hard limit too low: the cap is lowered, with a warning
    with caplog.at_level(logging.WARNING):
        edge.fit_open_files(state)
    assert state.max_connections == (1024 - edge.FD_RESERVE) // 2
    assert "at most 480 connections are accepted" in caplog.text

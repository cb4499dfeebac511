"""A device that stops reading, over real loopback sockets: the server's sends wait on the
socket (nothing piles up in the process: the TTS is held by the pipeline's bounded queue),
and after ``[limits] device_send_timeout_s`` the connection is dropped, the turn ends as a
disconnect and the session stays for a reconnect.

The device is a raw socket with a small receive buffer (and the server's send buffer is
small too), speaking WebSocket through websockets' sans-I/O client: it sends its handshake
and a ``Text`` command, then never reads again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading

import numpy as np
from test_device import TraceLines, build, on_server, run
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from echokit_fast.config import default_config
from echokit_fast.conversation.pipeline import QUEUE_CHUNKS

CHUNK = np.full(16000, 0.25, np.float32)  # 1 s: one 32 000-byte raw AudioChunk
TOTAL_CHUNKS = 600  # 10 min of audio, 19.2 MB as PCM16
SEND_TIMEOUT = 1.0


class EndlessSpeaker:
    """A TTS faster than any device: ``TOTAL_CHUNKS`` chunks as fast as they are taken;
    counts what it handed over."""

    def __init__(self) -> None:
        self.handed = 0
        self.closed = threading.Event()

    async def speak(self, text: str, *, sample_rate: int = 16000):
        try:
            for _ in range(TOTAL_CHUNKS):
                self.handed += 1
                yield CHUNK
                await asyncio.sleep(0)
        finally:
            self.closed.set()


def config_with(**limits):
    config = default_config()
    return config.model_copy(update={"limits": config.limits.model_copy(update=limits)})


def stalled_device(addr: str, device_id: str) -> socket.socket:
    """Connect with a 4 KiB receive buffer, say ``Text``, and read nothing after the 101."""
    host, port = addr.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.settimeout(20)
    sock.connect((host, int(port)))
    proto = ClientProtocol(parse_uri(f"ws://{addr}/ws/{device_id}"))
    proto.send_request(proto.connect())
    sock.sendall(b"".join(proto.data_to_send()))
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)  # byte by byte: nothing after the response is read
        assert data, "closed during the handshake"
        head += data
    assert head.startswith(b"HTTP/1.1 101"), head
    proto.receive_data(head)
    proto.send_text(json.dumps({"event": "Text", "input": "talk"}).encode())
    sock.sendall(b"".join(proto.data_to_send()))
    return sock


def drained_until_closed(sock: socket.socket) -> int:
    """Read what the server sent until the connection ends; the bytes read."""
    n = 0
    try:
        while data := sock.recv(1 << 16):
            n += len(data)
    except ConnectionResetError:
        pass
    return n


def test_a_device_that_stops_reading_is_dropped_and_nothing_piles_up(serve, tmp_path, caplog):
    speaker = EndlessSpeaker()
    app, f = build(
        tmp_path,
        speaker=speaker,
        script=lambda _text: ["Talk."],  # one segment
        config=config_with(device_send_timeout_s=SEND_TIMEOUT),
    )
    addr = serve(app, sndbuf=32768)
    caplog.set_level(logging.WARNING, logger="echokit_fast.device")

    with TraceLines() as trace:
        sock = stalled_device(addr, "slow")
        try:
            line = trace.get(timeout=30)  # the turn ended
            assert speaker.closed.wait(20)  # and its TTS stream was closed
            received = drained_until_closed(sock)  # the server dropped the connection
        finally:
            sock.close()

    assert line["device"] == "slow" and line["outcome"] == "disconnected"

    async def detached():
        def gone(m):
            return "slow" in m.sessions and m.sessions["slow"].conn is None

        return await f.manager.wait_until(gone, 20)

    assert run(on_server(f, detached))  # the session is kept for a reconnect
    assert f.manager.sessions["slow"].turn is None

    # What the TTS handed over beyond what the device read waited in the server: the
    # pipeline's queue, a frame or two, the 64 KiB transport buffer and the socket buffers
    # (both small here) -- not the whole 10 minutes as when the queue was unbounded.
    assert received < 2 * 2**20
    assert speaker.handed <= QUEUE_CHUNKS + 16 < TOTAL_CHUNKS
    warnings = [m for r in caplog.records if "device_send_timeout_s" in (m := r.getMessage())]
    assert len(warnings) == 1 and warnings[0].startswith("device slow: not reading")

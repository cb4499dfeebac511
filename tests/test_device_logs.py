"""What a device can put in the server's log, over real loopback sockets: its id is escaped
in every line (as the trace writes it: CR, LF and NUL as ``\\r``, ``\\n``, ``\\u0000``), a
text frame that is not UTF-8 is one WARNING line (no traceback) and a Close 1007, and a refused
recording is one WARNING line."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import websockets
from device_fakes import Device
from test_device import build, run
from websockets.client import ClientProtocol
from websockets.frames import Close
from websockets.protocol import State
from websockets.uri import parse_uri

from echokit_fast.conversation.session import Settings

NASTY = "a\r\nERROR fake line\x00"
NASTY_URL = "a%0D%0AERROR%20fake%20line%00"
ESCAPED = "a\\r\\nERROR fake line\\u0000"


@contextmanager
def records(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records of logger ``name`` and below, INFO and up, from any thread (uvicorn's
    loggers do not propagate to the root, where caplog listens)."""
    got: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = got.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield got
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_device_id_is_escaped_in_every_log_line(serve, tmp_path):
    app, f = build(tmp_path, settings=Settings(max_text_bytes=8))
    addr = serve(app)

    async def main():
        d = await Device.open(addr, NASTY_URL)
        await d.command("Text", input="far too long")  # refused: a warning naming the device
        await d.until()
        newer = await Device.open(addr, NASTY_URL)  # pre-empts: an info line
        await d.until()
        await newer.close()

    with records("echokit_fast") as got:
        run(main())
    assert NASTY in f.manager.sessions  # the id itself is kept as sent
    lines = [r.getMessage() for r in got if r.name != "echokit_fast.trace"]
    about = [m for m in lines if "ERROR fake line" in m]
    assert any("refused (max_text_bytes" in m for m in about)
    assert any("pre-empts" in m for m in about)
    for m in about:
        assert not set(m) & {"\r", "\n", "\x00"}, m
        assert f"device {ESCAPED}: " in m


def test_a_text_frame_that_is_not_utf8_is_one_warning_and_a_1007(serve, tmp_path):
    app, _f = build(tmp_path)
    addr = serve(app)
    host, port = addr.split(":")
    proto = ClientProtocol(parse_uri(f"ws://{addr}/ws/dev"))

    with (
        records("uvicorn") as got,
        records("asyncio") as loop_errors,
        socket.create_connection((host, int(port)), 20) as sock,
    ):
        proto.send_request(proto.connect())
        sock.sendall(b"".join(proto.data_to_send()))
        while proto.state is not State.OPEN:
            proto.receive_data(sock.recv(1 << 16))
        proto.send_text(b"\xff\xfe not UTF-8")
        sock.sendall(b"".join(proto.data_to_send()))
        while not proto.close_rcvd and (data := sock.recv(1 << 16)):
            proto.receive_data(data)
    assert proto.close_rcvd == Close(1007, "")
    utf8 = [r for r in got if "UTF-8" in r.getMessage()]
    assert [r.levelno for r in utf8] == [logging.WARNING]
    assert utf8[0].exc_info is None
    assert not [r for r in got if r.levelno >= logging.ERROR]
    assert not [r for r in loop_errors if r.levelno >= logging.ERROR]


def test_a_recording_that_cannot_start_is_one_warning(serve, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    app, _ = build(tmp_path, record_dir=blocker)
    addr = serve(app)

    async def main():
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(f"ws://{addr}/v1/record/dev")
        return err.value.response.status_code

    with records("echokit_fast.device") as got:
        assert run(main()) == 500
    assert [(r.levelno, r.exc_info) for r in got] == [(logging.WARNING, None)]
    assert got[0].getMessage().startswith("device dev: cannot start a recording")

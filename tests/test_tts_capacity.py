"""The embedded TTS engine shared by devices and the HTTP API, over real loopback sockets: devices
keep streams of their own (``[limits] tts_device_reserve``), the HTTP API gets 429 past its share,
a client that stops reading is cut off after ``http_send_timeout_s`` and its stream freed, and a
device segment that finds every stream taken waits (``tts_queue_s``) before it is refused.

The engine is the real streaming engine (`LocalSpeaker`: admission, worker thread, resampling)
with a tone for a voice, so that it costs nothing; the slow HTTP clients are real sockets with a
small receive buffer that read the response head and then stop reading (the server's sends then
block on TCP flow control, as with any client that does not read).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
from contextlib import ExitStack

import httpx
import numpy as np
import pytest
from device_fakes import Device, name
from test_config import PIPELINE
from test_device import build, run, segments

from echokit_fast.backends.base import BackendBusy
from echokit_fast.backends.tts.local import admission
from echokit_fast.backends.tts.local import engine as tts
from echokit_fast.backends.tts.local.admission import BUSY_NOTICE, Admission
from echokit_fast.config import ConfigError, LimitsConfig, default_config, parse_config
from echokit_fast.server.state import AppState

#: 400 one-second pieces: far more audio than socket buffers hold, so a client that does not
#: read holds its response (and its stream) until it is cut off or goes away
LONG = "Go on. " * 400
#: what the device's conversation answers (one segment per sentence: tests/device_fakes.py)
SEGMENTS = ["Hello there.", "How are you?", "Fine."]


class ToneSpeaker(tts.LocalSpeaker):
    """The embedded engine with a one-second tone per piece for a voice."""

    engine = "tone"
    native_rate = 16000
    default_voice = "tone"

    def voices(self):
        return ["tone"]

    def _load(self, voice):
        return voice

    def _render(self, model, piece, speed, rng):
        t = np.arange(self.native_rate, dtype=np.float32) / self.native_rate
        return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


class Records(logging.Handler):
    """Waits (from any thread) for a log record of `logger` containing `needle`."""

    def __init__(self, logger: str, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = threading.Event()
        self.logger = logging.getLogger(logger)

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()

    def __enter__(self) -> Records:
        self._level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)


class SlowReader:
    """A POST whose client reads the status line and headers, then nothing more of a 200 (the
    whole of any other answer: `body`)."""

    def __init__(self, addr: str, path: str, body: dict) -> None:
        host, port = addr.split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        sock.settimeout(20)
        sock.connect((host, int(port)))
        self.conn = http.client.HTTPConnection(host, int(port), timeout=20)
        self.conn.sock = sock
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        self.response: http.client.HTTPResponse | None = None
        self.body = b""

    def head(self) -> http.client.HTTPResponse:
        if self.response is None:
            self.response = self.conn.getresponse()
            if self.response.status != 200:
                self.body = self.response.read()
        return self.response

    def close(self) -> None:
        self.conn.close()


def open_readers(stack: ExitStack, addr: str, n: int, path: str = "/v1/audio/speech"):
    readers = []
    for _ in range(n):
        # wav: a stream large enough to fill the socket buffers of a reader that stops reading
        body = {"model": "tts-1", "input": LONG, "voice": "alloy", "response_format": "wav"}
        reader = SlowReader(addr, path, body)
        stack.callback(reader.close)
        readers.append(reader)
    return readers


def config(**limits) -> object:
    return default_config().model_copy(update={"limits": LimitsConfig(**limits)})


def server(serve, tmp_path, engine, **limits):
    """A device server whose backends' speaker and HTTP API engine are both `engine`."""
    app, f = build(tmp_path, speaker=engine, tts=engine, config=config(**limits))
    return serve(app), f


async def device_turn(addr: str, device_id: str) -> list:
    d = await Device.open(addr, device_id, opus=True)
    await d.command("Text", input="hi")
    events = await d.until()
    await d.close()
    return events


def assert_spoken(events: list) -> None:
    """The device got the answer as speech: every segment with audio, no busy notice."""
    assert "DisplayText" not in [name(e) for e in events], events[:3]
    segs = segments(events)
    assert [text for text, _ in segs] == SEGMENTS
    assert all(len(audio) > 0 for _, audio in segs)


def assert_busy_429(reader: SlowReader) -> None:
    assert reader.head().status == 429
    assert reader.head().getheader("Retry-After") == "1"
    error = json.loads(reader.body)["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "server_busy"
    assert error["param"] is None and "busy" in error["message"]


@pytest.fixture
def engines():
    made: list[ToneSpeaker] = []

    def make(**kw) -> ToneSpeaker:
        made.append(ToneSpeaker(**kw))
        return made[-1]

    yield make
    for e in made:
        e.close()


# --- over the sockets ---------------------------------------------------------------------


def test_slow_http_readers_do_not_silence_a_device(serve, tmp_path, engines):
    engine = engines(max_streams=8)  # the default: half of them kept for devices
    addr, _ = server(serve, tmp_path, engine, http_send_timeout_s=120)
    with ExitStack() as stack:
        readers = open_readers(stack, addr, 8)
        for r in readers:
            r.head()
        held = engine.active_streams
        events = run(device_turn(addr, "dev"))
    assert_spoken(events)
    assert [r.head().status for r in readers] == [200] * 4 + [429] * 4
    assert held == 4  # the slow readers held the HTTP API's share, no more
    for r in readers[4:]:
        assert_busy_429(r)


def test_a_burst_beyond_the_http_share_gets_429_while_a_device_speaks(serve, tmp_path, engines):
    engine = engines(max_streams=8)
    addr, _ = server(serve, tmp_path, engine, http_send_timeout_s=120)
    with ExitStack() as stack:
        readers = open_readers(stack, addr, 50)  # all 50 requests sent before any answer is read
        for r in readers:
            r.head()
        gsv = SlowReader(addr, "/v1/audio/stream_speech", {"input": LONG})
        stack.callback(gsv.close)
        gsv.head()
        events = run(device_turn(addr, "burst"))
    assert_spoken(events)
    statuses = [r.head().status for r in readers]
    assert statuses.count(200) == 4 and statuses.count(429) == 46
    for r in readers:
        if r.head().status == 429:
            assert_busy_429(r)
    assert gsv.head().status == 429 and gsv.head().getheader("Retry-After") == "1"
    assert "busy" in gsv.body.decode()


def test_a_slow_reader_is_cut_off_and_its_stream_freed(serve, tmp_path, engines):
    engine = engines(max_streams=2)  # one stream for the HTTP API
    addr, _ = server(serve, tmp_path, engine, http_send_timeout_s=0.5)
    with ExitStack() as stack, Records("echokit_fast.api.tts", "response cut off") as cut:
        (reader,) = open_readers(stack, addr, 1)
        assert reader.head().status == 200
        assert cut.seen.wait(20), "the slow reader was never cut off"
        assert engine.active_streams == 0
        # the HTTP API's stream is free: the next request gets it, and all of its audio
        go = {"input": "Go.", "voice": "alloy", "response_format": "wav"}
        r = httpx.post(f"http://{addr}/v1/audio/speech", json=go)
        assert r.status_code == 200
        assert len(r.content) == 44 + 2 * len(engine.synthesize("Go.", sample_rate=24000))
        # what was sent before the cut still arrives, then the body ends unfinished
        with pytest.raises(http.client.IncompleteRead):
            reader.head().read()


def test_a_device_segment_waits_for_a_stream_then_speaks(serve, tmp_path, engines):
    engine = engines(max_streams=2, device_reserve=1, queue_s=60)
    addr, _ = server(serve, tmp_path, engine, http_send_timeout_s=120)

    waiting = Records(admission.__name__, "waits")

    async def main():
        held = engine.speak("Hold on.", sample_rate=16000)  # a device stream: the reserved one
        await anext(held)
        turn = asyncio.create_task(device_turn(addr, "waiter"))
        assert await asyncio.to_thread(waiting.seen.wait, 20), "the segment did not wait"
        assert not turn.done()
        await held.aclose()  # the stream passes to the waiting segment
        return await turn

    with ExitStack() as stack, waiting:
        (reader,) = open_readers(stack, addr, 1)  # the HTTP API's share
        assert reader.head().status == 200
        assert engine.active_streams == 1
        events = run(main())
    assert_spoken(events)


def test_a_device_segment_that_waits_too_long_gets_the_busy_notice(serve, tmp_path, engines):
    engine = engines(max_streams=1, device_reserve=1, queue_s=0.3)  # no HTTP API share
    addr, _ = server(serve, tmp_path, engine)

    async def main():
        held = engine.speak("Hold on.", sample_rate=16000)
        await anext(held)
        try:
            return await device_turn(addr, "late")
        finally:
            await held.aclose()

    with Records(admission.__name__, "waits") as waiting:
        events = run(main())
    assert waiting.seen.is_set()  # it waited before it was refused
    assert {"DisplayText": {"text": BUSY_NOTICE}} in events
    assert segments(events)[-1] == (BUSY_NOTICE, [])  # shown, not spoken: the TTS is what failed
    assert not any(audio for _, audio in segments(events))
    r = httpx.post(f"http://{addr}/v1/audio/speech", json={"input": "Go.", "voice": "alloy"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "server_busy"


# --- the admission itself -------------------------------------------------------------------


def test_admission_shares_reserve_and_fifo():
    adm = Admission(3, 1, 30, backend="tts:x")
    order: list[str] = []

    async def device(tag: str, release: asyncio.Event) -> None:
        async with adm.slot("device"):
            order.append(tag)
            await release.wait()

    async def main():
        api = [adm.slot("api") for _ in range(3)]
        await api[0].__aenter__()
        await api[1].__aenter__()
        with pytest.raises(BackendBusy, match="2 of its 2 streams"):
            await api[2].__aenter__()  # past the share, though a stream is free
        go = asyncio.Event()
        first = asyncio.create_task(device("first", go))  # the reserved stream
        await asyncio.sleep(0)
        second = asyncio.create_task(device("second", go))
        third = asyncio.create_task(device("third", go))
        while adm.waiting < 2:
            await asyncio.sleep(0)
        with pytest.raises(BackendBusy):
            await adm.slot("api").__aenter__()  # devices are waiting: the API waits its turn
        await api[0].__aexit__(None, None, None)  # an API stream frees: the first waiter's
        while len(order) < 2:
            await asyncio.sleep(0)
        assert order == ["first", "second"] and adm.active == 3 and adm.waiting == 1
        go.set()
        await asyncio.gather(first, second, third)
        await api[1].__aexit__(None, None, None)
        assert order == ["first", "second", "third"]
        assert (adm.active, adm.waiting) == (0, 0)

    run(main(), 20)


def test_admission_timeout_and_cancel_leave_nothing_held():
    adm = Admission(1, 1, 0.2, backend="tts:x")

    async def main():
        held = adm.slot("device")
        await held.__aenter__()
        with pytest.raises(BackendBusy, match=r"limits\.tts_queue_s") as info:
            async with adm.slot("device"):
                pass
        assert info.value.notice == BUSY_NOTICE
        waiter = asyncio.create_task(adm.slot("device").__aenter__())
        while adm.waiting < 1:
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert adm.waiting == 0
        await held.__aexit__(None, None, None)
        assert adm.active == 0

    run(main(), 20)


# --- configuration ---------------------------------------------------------------------------


def test_limits_defaults_and_the_engine_they_build(monkeypatch):
    limits = parse_config(PIPELINE, filename="config.toml", env={}).config.limits
    assert (limits.tts_streams, limits.tts_device_reserve) == (8, 4)
    assert (limits.tts_queue_s, limits.http_send_timeout_s) == (3.0, 30.0)
    text = "[limits]\ntts_streams = 3\ntts_queue_s = 0.5\n"
    limits = parse_config(PIPELINE + text, filename="config.toml", env={}).config.limits
    assert (limits.tts_streams, limits.tts_device_reserve, limits.tts_queue_s) == (3, 1, 0.5)

    monkeypatch.setitem(tts._ENGINE_CLASSES, "hibari", ToneSpeaker)
    state = AppState(config(tts_streams=5, tts_device_reserve=2, tts_queue_s=1.5))
    engine = state.tts_engine()
    try:
        adm = engine.admission
        assert (adm.streams, adm.reserve, adm.queue_s) == (5, 2, 1.5)
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tts_streams = 0", "limits.tts_streams: must be >= 1"),
        ("tts_device_reserve = -1", "limits.tts_device_reserve: must be >= 0"),
        ("tts_streams = 2\ntts_device_reserve = 3", "tts_device_reserve (3) must be at most"),
        ("tts_queue_s = -1", "limits.tts_queue_s: must be >= 0"),
        ("http_send_timeout_s = 0", "limits.http_send_timeout_s: must be > 0"),
        ('tts_streams = "8"', "limits.tts_streams"),
    ],
)
def test_tts_limits_are_validated_at_load(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config(PIPELINE + f"[limits]\n{text}\n", filename="config.toml", env={})
    assert message in str(err.value)

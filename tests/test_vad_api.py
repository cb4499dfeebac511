"""The VAD service over real sockets: POST /v1/audio/vad, WS /v1/audio/realtime_vad, the CLI.

Expected segments come from the fixture in tests/data (official silero-vad results) or, for
the streaming events, from the engine (``VadStream``, itself checked against the official
``VADIterator`` vectors in test_vad.py) and the reference's ``StreamingVad`` vectors.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import threading
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from harness import api_state, free_port, spawned_serve
from websockets.exceptions import InvalidStatus

from echokit_fast.api.vad import CompatStreamingVad, RealtimeVad, ws_params
from echokit_fast.backends.vad import silero as vad
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"
FIXTURE_WAV = (DATA / "vad_fixture_hello16k.wav").read_bytes()
FIXTURE = json.loads((DATA / "vad_fixture_hello16k.json").read_text())
#: the v6 model the expected events are computed with (the app's default model)
MODEL = vad.SileroVad("v6")
VECTORS = json.loads((DATA / "vad_test_vectors.json").read_text())["vectors"]
V6_SEGMENTS = [{"start": s, "end": e} for s, e in FIXTURE["models"]["v6"]["timestamps"]]
V5_REF = FIXTURE["models"]["v5"]["rust_crate_expected"]

with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as _w:
    PCM16 = _w.readframes(_w.getnframes())
AUDIO = np.frombuffer(PCM16, "<i2").astype(np.float32) / np.float32(32768.0)
SILENCE_1S = bytes(32000)
# sizes that cross window edges in every way: 1 byte, odd counts, the 1500-then-100 bytes
# that crash the reference, whole windows, several windows
CHUNKS = [1, 3, 1500, 100, 7, 1024, 4096, 999, 2049, 1]
WAIT = 30.0


def make_wav(x: np.ndarray, rate: int, bits: int, *, fmt: str = "int", ext: bool = False):
    """A WAV file packed here by hand (independent of echokit_fast.audio.write_wav)."""
    x = np.atleast_2d(x.T).T if x.ndim == 1 else x
    channels = x.shape[1]
    if fmt == "float":
        payload = x.astype("<f4").tobytes()
        tag = 3
    else:
        scale = 2 ** (bits - 1)
        q = np.clip(np.round(x * scale), -scale, scale - 1).astype(np.int64)
        if bits == 8:
            payload = (q + 128).astype(np.uint8).tobytes()
        else:
            width = bits // 8
            raw = (q & ((1 << bits) - 1)).astype("<u4").tobytes()
            u = np.frombuffer(raw, np.uint8).reshape(-1, 4)[:, :width]
            payload = u.tobytes()
        tag = 1
    block = channels * bits // 8
    if ext:
        sub = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt_chunk = struct.pack(
            "<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0
        )
        fmt_chunk += sub
    else:
        fmt_chunk = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    body += b"data" + struct.pack("<I", len(payload)) + payload
    if len(payload) % 2:
        body += b"\x00"
    return b"RIFF" + struct.pack("<I", len(body)) + body


def resampled(rate: int) -> np.ndarray:
    import soxr  # an independent resampler makes the test input

    return soxr.resample(AUDIO, 16000, rate).astype(np.float32)


def iterator_events(pcm: bytes, model, **params) -> list[str]:
    """What the realtime route must send in iterator mode: the engine's VADIterator events."""
    stream = vad.VadStream(model, **params)
    usable = len(pcm) // 1024 * 1024
    return ["speech_start" if "start" in e else "speech_end" for e in stream.push(pcm[:usable])]


@pytest.fixture
def ctx() -> AppState:
    return api_state()


@pytest.fixture
def server(serve, ctx) -> str:
    return serve(create_app(state=ctx))


def realtime(ctx: AppState) -> RealtimeVad:
    assert ctx.realtime_vad is not None, "the app has no realtime VAD"
    return ctx.realtime_vad


def post(addr: str, files=None, *, params=None, data=None, **kw) -> httpx.Response:
    return httpx.post(
        f"http://{addr}/v1/audio/vad", files=files, params=params, data=data, timeout=WAIT, **kw
    )


# --- POST /v1/audio/vad --------------------------------------------------------------------


def test_http_fixture_gives_the_official_segments(server):
    r = post(server, {"audio": ("audio.wav", FIXTURE_WAV, "audio/wav")})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"timestamps": V6_SEGMENTS}


@pytest.mark.parametrize(
    ("rate", "channels", "bits", "fmt", "ext"),
    [
        (44100, 2, 24, "int", False),
        (48000, 2, 16, "int", True),
        (24000, 1, 16, "int", False),  # what EchoKit posts
        (8000, 2, 16, "int", False),
        (32000, 3, 32, "float", False),
        (22050, 1, 32, "int", True),
        (16000, 1, 8, "int", False),
    ],
)
def test_http_any_wav_gives_segments_at_the_same_places(server, rate, channels, bits, fmt, ext):
    x = resampled(rate)
    gains = np.array([0.9, 0.6, 0.3][:channels], np.float32)
    wav = make_wav(x[:, None] * gains[None, :], rate, bits, fmt=fmt, ext=ext)
    r = post(server, {"audio": ("a.wav", wav)})
    assert r.status_code == 200, r.text
    got = r.json()["timestamps"]
    assert len(got) == len(V6_SEGMENTS)
    for seg, want in zip(got, V6_SEGMENTS, strict=True):  # 16 kHz indices, +-1 window
        assert abs(seg["start"] - want["start"]) <= 512
        assert abs(seg["end"] - want["end"]) <= 512


def test_http_part_without_filename_is_read_byte_exact(server):
    # Starlette turns a part without a filename into text; the route reads the raw bytes.
    r = post(server, {"audio": (None, FIXTURE_WAV)})
    assert r.status_code == 200, r.text
    assert r.json() == {"timestamps": V6_SEGMENTS}


def test_http_first_audio_part_wins_and_other_parts_are_skipped(server):
    silent = make_wav(np.zeros(16000, np.float32), 16000, 16)
    files = [
        ("note", (None, b"hello")),
        ("audio", ("a.wav", FIXTURE_WAV)),
        ("audio", ("b.wav", silent)),
    ]
    assert post(server, files).json() == {"timestamps": V6_SEGMENTS}
    files = [("audio", ("b.wav", silent)), ("audio", ("a.wav", FIXTURE_WAV))]
    assert post(server, files).json() == {"timestamps": []}


def test_http_empty_and_silent_wavs_have_no_speech(server):
    empty = make_wav(np.zeros(0, np.float32), 16000, 16)
    silent = make_wav(np.zeros(24000, np.float32), 24000, 16)
    for wav in (empty, silent):
        r = post(server, {"audio": ("a.wav", wav)})
        assert r.status_code == 200 and r.json() == {"timestamps": []}


def test_http_parameters_tune_the_segmenter(server):
    files = {"audio": ("a.wav", FIXTURE_WAV)}
    pad = 480  # 30 ms at 16 kHz: the default padding on each side
    unpadded = [{"start": s["start"] + pad, "end": s["end"] - pad} for s in V6_SEGMENTS]
    r = post(server, files, params={"speech_pad_ms": "0"})
    assert r.status_code == 200 and r.json()["timestamps"] == unpadded
    r = post(server, files, data={"speech_pad_ms": "0"})  # as a form field
    assert r.status_code == 200 and r.json()["timestamps"] == unpadded
    # 100 ms of padding: 1600 samples each side
    r = post(server, files, params={"speech_pad_ms": "100"})
    assert r.json()["timestamps"] == [
        {"start": s["start"] - 1600, "end": s["end"] + 1600} for s in unpadded
    ]
    # no segment lasts 10 s
    r = post(server, files, params={"min_speech_duration_ms": "10000"})
    assert r.status_code == 200 and r.json() == {"timestamps": []}
    # a threshold no window reaches
    r = post(server, files, params={"threshold": "1"})
    assert r.status_code == 200 and r.json() == {"timestamps": []}
    expected = vad.get_speech_timestamps(AUDIO, min_silence_duration_ms=20)
    r = post(server, files, params={"min_silence_duration_ms": "20"})
    assert r.json()["timestamps"] == expected


@pytest.mark.parametrize(
    ("params", "data", "message"),
    [
        ({"threshold": "abc"}, None, "threshold must be a number, got 'abc'"),
        ({"threshold": "1.5"}, None, "threshold must be in 0..1, got '1.5'"),
        ({"speech_pad_ms": "-1"}, None, "speech_pad_ms must be in 0..600000, got '-1'"),
        ({"min_silence_duration_ms": "nan"}, None, "min_silence_duration_ms must be in"),
        ({"min_speech_duration_ms": "inf"}, None, "min_speech_duration_ms must be in"),
        (None, {"threshold": "x"}, "threshold must be a number, got 'x'"),
        ({"threshold": "0.4"}, {"threshold": "0.6"}, "threshold is given in both"),
    ],
)
def test_http_bad_parameters_are_400(server, params, data, message):
    r = post(server, {"audio": ("a.wav", FIXTURE_WAV)}, params=params, data=data)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_http_bad_requests_are_400_with_a_precise_error(server):
    r = post(server, {"audio": ("a.wav", b"this is not a wav file at all")})
    assert r.status_code == 400
    assert r.json()["error"].startswith("not a usable WAV file: not a WAV file")
    assert "RIFF" in r.json()["error"]
    truncated = FIXTURE_WAV[:40]
    r = post(server, {"audio": ("a.wav", truncated)})
    assert r.status_code == 400 and "not a usable WAV file" in r.json()["error"]
    r = post(server, {"file": ("a.wav", FIXTURE_WAV)})
    assert r.status_code == 400
    assert r.json() == {"error": "no part named 'audio' in the multipart body (parts: file)"}
    for rate in (4000, 96000):
        r = post(server, {"audio": ("a.wav", make_wav(np.zeros(800, np.float32), rate, 16))})
        assert r.status_code == 400
        assert r.json() == {
            "error": f"WAV sample rate {rate} Hz is not supported (expected 8000..48000)"
        }


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b'{"audio": 1}', "expected a multipart/form-data body"),
        ("audio/wav", FIXTURE_WAV, "got Content-Type 'audio/wav'"),
        ("application/x-www-form-urlencoded", b"audio=1", "expected a multipart/form-data"),
        (None, FIXTURE_WAV, "got Content-Type '(none)'"),
        ("multipart/form-data", b"--x\r\n", "has no boundary"),
        ("multipart/form-data; boundary=zz", b"garbage", "malformed multipart body"),
        ("multipart/form-data; boundary=zz", b"--zz--\r\n", "(it has no parts)"),
    ],
)
def test_http_non_multipart_bodies_are_400(server, content_type, body, message):
    headers = {} if content_type is None else {"content-type": content_type}
    r = httpx.post(f"http://{server}/v1/audio/vad", content=body, headers=headers, timeout=WAIT)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_http_wrong_method_is_405(server):
    assert httpx.get(f"http://{server}/v1/audio/vad").status_code == 405


def test_http_body_over_the_limit_is_413(server):
    big = make_wav(np.zeros(5_300_000, np.float32), 16000, 16)  # 10.6 MB
    assert len(big) > 10 * 1024 * 1024
    r = post(server, {"audio": ("big.wav", big)})
    assert r.status_code == 413
    assert r.json() == {"error": "request body exceeds the limit of 10485760 bytes"}

    # chunked upload (no Content-Length): counted while it streams
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    ).encode()

    def chunks():
        yield head
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(
        f"http://{server}/v1/audio/vad",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=WAIT,
    )
    assert r.status_code == 413
    assert "exceeds the limit" in r.json()["error"]


def test_http_body_limit_is_configurable(serve):
    ctx = api_state(max_body_bytes=50_000)
    addr = serve(create_app(state=ctx))
    r = post(addr, {"audio": ("a.wav", FIXTURE_WAV)})  # 163 kB
    assert r.status_code == 413
    assert r.json() == {"error": "request body exceeds the limit of 50000 bytes"}
    small = make_wav(AUDIO[:16000], 16000, 16)
    assert post(addr, {"audio": ("a.wav", small)}).status_code == 200


class GatedModel:
    """The real model behind a gate: the first model call waits until the test opens it."""

    def __init__(self, model: vad.SileroVad | None = None) -> None:
        self.model = model or MODEL
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls: list[int] = []  # streams (batch size N) of each call

    def runner(self, sampling_rate: int):
        run = self.model.runner(sampling_rate)

        def gated(frames, state):
            self.calls.append(frames.shape[1])
            self.entered.set()
            if not self.gate.wait(WAIT):
                raise RuntimeError("the test never opened the gate")
            return run(frames, state)

        return gated


def test_http_inference_runs_off_the_event_loop(serve):
    ctx = api_state()
    gated = GatedModel()
    ctx.vad = gated
    addr = serve(create_app(state=ctx))
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(r=post(addr, {"audio": ("a", FIXTURE_WAV)})))
    t.start()
    try:
        assert gated.entered.wait(WAIT)
        # the model is busy in a worker thread; the server still answers
        assert httpx.get(f"http://{addr}/version", timeout=WAIT).status_code == 200
        assert "r" not in result
    finally:
        gated.gate.set()
        t.join(WAIT)
    assert result["r"].status_code == 200
    assert result["r"].json() == {"timestamps": V6_SEGMENTS}


def test_http_model_failure_is_500(serve):
    ctx = api_state()
    ctx.vad = FailingModel()
    addr = serve(create_app(state=ctx))
    r = post(addr, {"audio": ("a.wav", FIXTURE_WAV)})
    assert r.status_code == 500
    assert r.json() == {"error": "VAD processing error: model exploded"}


class FailingModel:
    def runner(self, sampling_rate: int):
        def run(frames, state):
            raise RuntimeError("model exploded")

        return run


# --- WS /v1/audio/realtime_vad: the reference's StreamingVad (compat) ----------------------


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_compat_state_machine_matches_the_reference_vectors(vec):
    p = vec["params"]
    machine = CompatStreamingVad(
        threshold=p.get("threshold", 0.5),
        neg_threshold=p.get("neg_threshold"),
        min_speech_duration_ms=p.get("min_speech_duration_ms", 250),
        sampling_rate=vec["sampling_rate"],
    )
    got = [[i, e] for i, prob in enumerate(vec["probs"]) if (e := machine.step(prob))]
    assert got == vec["rust_crate_stream_events"]


def test_compat_state_machine_on_the_fixture_v5_probabilities():
    machine = CompatStreamingVad()
    probs = FIXTURE["models"]["v5"]["probs"]
    got = [[i, e] for i, prob in enumerate(probs) if (e := machine.step(prob))]
    assert got == V5_REF["ws_events"]


def test_compat_reset_keeps_the_min_speech_counter():
    machine = CompatStreamingVad()
    assert machine.step(0.9) == "speech_start"
    assert machine.step(0.1) is None  # 512 < 4000 samples of speech: no end yet
    machine.reset()
    assert machine.triggered is False
    assert machine.started == 1024  # the reference never resets it
    assert machine.step(0.9) == "speech_start"


def test_ws_params_validation():
    assert ws_params({}) == ("iterator", {})
    assert ws_params({"mode": "compat", "threshold": "0.6"}) == ("compat", {"threshold": 0.6})
    for query, message in [
        ({"mode": "fast"}, "mode must be one of iterator, compat, got 'fast'"),
        ({"threshold": "-0.1"}, "threshold must be in 0..1"),
        ({"min_silence_duration_ms": "x"}, "min_silence_duration_ms must be a number"),
        ({"min_speech_duration_ms": "100"}, "min_speech_duration_ms applies to mode=compat"),
        (
            {"mode": "compat", "min_silence_duration_ms": "100"},
            "min_silence_duration_ms applies to mode=iterator",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            ws_params(query)


# --- WS: over real sockets -----------------------------------------------------------------


def ws_url(addr: str, query: str = "") -> str:
    return f"ws://{addr}/v1/audio/realtime_vad" + (f"?{query}" if query else "")


async def send_chunked(ws, pcm: bytes, sizes=CHUNKS) -> None:
    i = k = 0
    while i < len(pcm):
        n = sizes[k % len(sizes)]
        await ws.send(pcm[i : i + n])
        i += n
        k += 1


def answered(ctx: AppState) -> int:
    """Windows the realtime service has answered so far (all connections)."""
    return realtime(ctx).windows_done


async def finish(ws, ctx: AppState, target: int) -> list[str]:
    """All events of the connection: wait (server side) until ``target`` windows in all have
    been answered -- every event is then sent --, close, collect what arrived before the
    close frame."""
    service = realtime(ctx)
    assert await asyncio.to_thread(service.wait_until, lambda s: s.windows_done >= target, WAIT)
    assert service.windows_done == target
    await ws.close()
    return [json.loads(m)["event"] for m in [m async for m in ws]]


def windows(n_bytes: int) -> int:
    return n_bytes // 1024


def test_ws_iterator_mode_any_frame_sizes(server, ctx):
    expected = iterator_events(PCM16 + SILENCE_1S, MODEL)
    assert expected == ["speech_start", "speech_end"]

    async def main():
        base = answered(ctx)
        async with websockets.connect(ws_url(server)) as ws:
            await send_chunked(ws, PCM16 + SILENCE_1S)
            return await finish(ws, ctx, base + windows(len(PCM16) + 32000))

    assert asyncio.run(main()) == expected


def test_ws_one_byte_frames_and_odd_counts_are_reframed_exactly(server, ctx):
    # whole clip: one byte at a time for the first 5000 bytes (covers the speech onset at
    # byte 16448 only partly), then odd-sized frames; the server must see the same samples
    pcm = PCM16 + SILENCE_1S
    prefix = 17001  # odd: the speech onset window is split across 1-byte frames

    async def main():
        base = answered(ctx)
        async with websockets.connect(ws_url(server)) as ws:
            for b in range(prefix):
                await ws.send(pcm[b : b + 1])
            await send_chunked(ws, pcm[prefix:], [3, 5, 1023, 1025, 511])
            await ws.send(b"\x01")  # a dangling odd byte at the end is simply held
            return await finish(ws, ctx, base + windows(len(pcm)))

    assert asyncio.run(main()) == iterator_events(pcm, MODEL)


def test_ws_compat_mode_reproduces_the_reference_on_v5(serve):
    ctx = api_state()
    ctx.vad = vad.SileroVad("v5")
    addr = serve(create_app(state=ctx))

    async def run(query: str) -> list[str]:
        base = answered(ctx)
        async with websockets.connect(ws_url(addr, query)) as ws:
            await send_chunked(ws, PCM16)
            return await finish(ws, ctx, base + windows(len(PCM16)))

    # the reference splits the one utterance at a 2-window dip (docs/apis.md#streaming)
    assert asyncio.run(run("mode=compat")) == [e for _, e in V5_REF["ws_events"]]
    # the default (VADIterator, 100 ms hangover) keeps it whole
    assert asyncio.run(run("")) == ["speech_start", "speech_end"]
    assert asyncio.run(run("mode=iterator")) == ["speech_start", "speech_end"]


def test_ws_query_parameters_change_the_events(server, ctx):
    model = MODEL
    pcm = PCM16 + SILENCE_1S
    # the clip has a 3-window dip (p 0.21, 0.8, 0.32): below 0.84 = 0.99 - 0.15 for 96 ms
    split = iterator_events(pcm, model, threshold=0.99, min_silence_duration_ms=50)
    assert split == ["speech_start", "speech_end"] * 2
    assert iterator_events(pcm, model, threshold=0.99) == ["speech_start", "speech_end"]

    async def run(query: str) -> list[str]:
        base = answered(ctx)
        async with websockets.connect(ws_url(server, query)) as ws:
            await send_chunked(ws, pcm)
            return await finish(ws, ctx, base + windows(len(pcm)))

    assert asyncio.run(run("threshold=0.99&min_silence_duration_ms=50")) == split
    assert asyncio.run(run("threshold=0.99")) == ["speech_start", "speech_end"]
    assert asyncio.run(run("threshold=1")) == []


def test_ws_reset_mid_stream(server, ctx):
    model = MODEL
    part1 = PCM16[:30000]  # ends inside the speech; 30000 % 1024 = 304 bytes carried over
    carried = part1[len(part1) // 1024 * 1024 :]
    before = iterator_events(part1, model)
    assert before == ["speech_start"]  # triggered when the reset comes
    after = iterator_events(carried + PCM16 + SILENCE_1S, model)  # a fresh stream

    async def main():
        base = answered(ctx)
        async with websockets.connect(ws_url(server)) as ws:
            await send_chunked(ws, part1)
            await ws.send("reset")
            await send_chunked(ws, PCM16 + SILENCE_1S)
            # the carried 304 bytes count: windows stay aligned with the byte stream
            return await finish(ws, ctx, base + windows(len(part1) + len(PCM16) + 32000))

    # without the reset of the trigger, the second speech_start would be missing
    assert asyncio.run(main()) == before + after


def test_ws_other_text_is_ignored(server, ctx):
    async def main():
        base = answered(ctx)
        async with websockets.connect(ws_url(server)) as ws:
            await ws.send("hello")
            await ws.send("RESET")
            await send_chunked(ws, PCM16 + SILENCE_1S)
            return await finish(ws, ctx, base + windows(len(PCM16) + 32000))

    assert asyncio.run(main()) == iterator_events(PCM16 + SILENCE_1S, MODEL)


def test_ws_client_disconnect_mid_stream_leaves_nothing_behind(server, ctx):
    service = realtime(ctx)

    async def abrupt():
        ws = await websockets.connect(ws_url(server))
        await send_chunked(ws, PCM16[:40000])
        assert await asyncio.to_thread(service.wait_until, lambda s: s.open_streams == 1, WAIT)
        ws.transport.abort()  # TCP reset, no close frame, audio still in flight

    async def clean():
        async with websockets.connect(ws_url(server)) as ws:
            await send_chunked(ws, PCM16[:20001])

    for client in (abrupt, clean):
        asyncio.run(client())
        assert service.wait_until(
            lambda s: s.connections == 0 and s.open_streams == 0 and not s.stepping, WAIT
        )

    # and the service still works for the next client
    async def again():
        base = answered(ctx)
        async with websockets.connect(ws_url(server)) as ws:
            await send_chunked(ws, PCM16 + SILENCE_1S)
            return await finish(ws, ctx, base + windows(len(PCM16) + 32000))

    assert asyncio.run(again()) == ["speech_start", "speech_end"]
    assert service.wait_until(lambda s: s.open_streams == 0 and not s.stepping, WAIT)


def test_ws_concurrent_clients_are_batched_and_independent(serve):
    ctx = api_state()
    gated = GatedModel()
    ctx.vad = gated
    addr = serve(create_app(state=ctx))
    model = MODEL
    a_pcm = PCM16 + SILENCE_1S
    b_pcm = SILENCE_1S + PCM16[:40000]  # ends inside the speech
    a_expected = iterator_events(a_pcm, model)
    b_expected = iterator_events(b_pcm, model)
    assert (a_expected, b_expected) == (["speech_start", "speech_end"], ["speech_start"])
    service = realtime(ctx)

    async def main():
        async with (
            websockets.connect(ws_url(addr)) as a,
            websockets.connect(ws_url(addr)) as b,
        ):
            await a.send(a_pcm[:1024])  # the first model call: A alone, held at the gate
            assert await asyncio.to_thread(gated.entered.wait, WAIT)
            await send_chunked(a, a_pcm[1024:])
            await send_chunked(b, b_pcm)
            total = windows(len(a_pcm)) + windows(len(b_pcm))
            # both streams' windows are buffered: the next call must take both
            assert await asyncio.to_thread(
                service.wait_until, lambda s: s.windows_pushed == total, WAIT
            )
            gated.gate.set()
            assert await asyncio.to_thread(
                service.wait_until, lambda s: s.windows_done == total, WAIT
            )
            await a.close()
            await b.close()
            got_a = [json.loads(m)["event"] async for m in a]
            got_b = [json.loads(m)["event"] async for m in b]
            return got_a, got_b

    got_a, got_b = asyncio.run(main())
    assert got_a == a_expected
    assert got_b == b_expected
    assert gated.calls[0] == 1 and 2 in gated.calls[1:]  # one model call served both
    assert service.max_streams_per_step == 2


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("mode=turbo", "mode must be one of iterator, compat, got 'turbo'"),
        ("threshold=2", "threshold must be in 0..1, got '2'"),
        ("min_silence_duration_ms=abc", "min_silence_duration_ms must be a number, got 'abc'"),
        ("mode=compat&min_silence_duration_ms=50", "applies to mode=iterator only"),
    ],
)
def test_ws_bad_query_is_http_400_before_the_upgrade(server, query, message):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(server, query)):
                pass
        return info.value.response

    response = asyncio.run(main())
    assert response.status_code == 400
    assert message in json.loads(response.body)["error"]


def test_ws_inference_error_is_reported_and_closes_1011(serve):
    ctx = api_state()
    ctx.vad = FailingModel()
    addr = serve(create_app(state=ctx))

    async def main():
        async with websockets.connect(ws_url(addr)) as ws:
            await ws.send(PCM16[:3000])
            messages = []
            with pytest.raises(websockets.ConnectionClosedError):
                while True:
                    messages.append(json.loads(await ws.recv()))
            return messages, ws.close_code, ws.close_reason

    messages, code, reason = asyncio.run(main())
    assert messages == [{"error": "VAD processing error", "message": "model exploded"}]
    assert (code, reason) == (1011, "VAD processing error")
    assert realtime(ctx).wait_until(lambda s: s.open_streams == 0 and not s.stepping, WAIT)


def test_ws_offered_permessage_deflate_is_declined(server, ctx):
    async def main():
        # websockets offers permessage-deflate by default
        async with websockets.connect(ws_url(server), compression="deflate") as ws:
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    assert asyncio.run(main()) is None


# --- the real `echokit-fast serve` process, and `echokit-fast vad` -------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "echokit_fast", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_vad_prints_what_the_route_answers(server, tmp_path):
    out = run_cli("vad", str(DATA / "vad_fixture_hello16k.wav"))
    assert out.returncode == 0, out.stderr
    route = post(server, {"audio": ("a.wav", FIXTURE_WAV)})
    assert out.stdout.strip() == route.text
    assert json.loads(out.stdout) == {"timestamps": V6_SEGMENTS}

    wav = tmp_path / "a44k.wav"
    wav.write_bytes(make_wav(resampled(44100)[:, None].repeat(2, 1), 44100, 24))
    out = run_cli("vad", str(wav), "--speech-pad-ms", "0")
    assert out.returncode == 0, out.stderr
    route = post(server, {"audio": ("a.wav", wav.read_bytes())}, params={"speech_pad_ms": "0"})
    assert json.loads(out.stdout) == route.json()


def test_cli_vad_bad_file_exits_1(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    out = run_cli("vad", str(bad))
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith(f"echokit-fast vad: {bad}: not a usable WAV file")
    out = run_cli("vad", str(tmp_path / "missing.wav"))
    assert out.returncode == 1 and "No such file" in out.stderr
    out = run_cli("vad", str(DATA / "vad_fixture_hello16k.wav"), "--threshold", "7")
    assert out.returncode == 2 and "threshold must be in 0..1" in out.stderr


def test_serve_command_exposes_the_routes_without_deflate():
    port = free_port()
    with spawned_serve("--listen", f"127.0.0.1:{port}"):
        addr = f"127.0.0.1:{port}"
        assert post(addr, {"audio": ("a.wav", FIXTURE_WAV)}).json() == {"timestamps": V6_SEGMENTS}

        async def main():
            async with websockets.connect(ws_url(addr), compression="deflate") as ws:
                assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
                await ws.send(PCM16 + SILENCE_1S)
                return [json.loads(await ws.recv())["event"] for _ in range(2)]

        assert asyncio.run(main()) == ["speech_start", "speech_end"]

"""Decoded-duration limits and cancellation of abandoned transcriptions, over real sockets.

An uploaded file is refused by its header (WAV), by the duration its container declares or,
failing both, by counting while decoding -- never by decoding it whole first: a 1 KB WAV
whose header says 1 Hz would otherwise become 10 minutes of 16 kHz audio for Whisper. The
engine is a stand-in (``FakeModel``) that records every call, so "Whisper was never called"
is an assertion, not a timing.
"""

from __future__ import annotations

import functools
import io
import queue
import socket
import threading
from typing import Any

import av
import httpx
import numpy as np
import pytest
from asr_helpers import FakeModel
from harness import API_ONLY, api_state

from echokit_fast import audio
from echokit_fast.backends.asr.local.engine import LocalWhisper, WhisperJob
from echokit_fast.config import ConfigError, parse_config
from echokit_fast.server.app import create_app

WAIT = 30.0  # a bound on waits for events that must come, not a synchronisation
DEFAULT_CAP = 600


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(np.arange(round(seconds * rate)) * 0.05)).astype(np.float32)


@functools.cache
def flac(seconds: int) -> bytes:
    """`seconds` of 16 kHz silence as FLAC (PyAV's encoder)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=16000, layout="mono")
        second = np.zeros((1, 16000), np.int16)
        for i in range(seconds):
            frame = av.AudioFrame.from_ndarray(second, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def claiming(data: bytes, samples: int) -> bytes:
    """FLAC `data` whose STREAMINFO claims `samples` samples (0 = "unknown")."""
    # "fLaC", a 4-byte block header, then STREAMINFO: its bytes 10..18 hold (big-endian)
    # rate:20 channels:3 bits:5 total_samples:36.
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0
    packed = int.from_bytes(data[18:26], "big") >> 36 << 36 | samples
    return data[:18] + packed.to_bytes(8, "big") + data[26:]


def one_hertz_wav(size: int) -> bytes:
    """A valid 16-bit WAV of about `size` bytes whose header says 1 Hz."""
    return audio.write_wav(np.full((size - 44) // 2, 0.1, np.float32), 1)


def start(
    serve, engine: LocalWhisper | None = None, config_text: str = "", *, vad: Any = None, **kw
) -> str:
    """A server with `engine` as its Whisper (and `vad` as its VAD model, if given) and the
    config file `config_text` (its [limits] table; the AI sections are not used here)."""
    config = parse_config(API_ONLY + config_text, log_issues=False).config
    state = api_state(config, asr=engine, vad=vad, **kw)
    return f"http://{serve(create_app(state=state))}"


def transcribe(base: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{base}/v1/audio/transcriptions", files={"file": (name, data)}, timeout=WAIT)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --- the header, read without decoding ------------------------------------------------------


def test_wav_info_is_what_read_wav_decodes() -> None:
    stereo = np.stack([tone(0.5, 22050), tone(0.5, 22050)], axis=1)
    for data in (audio.write_wav(tone(1.25), 16000), audio.write_wav(stereo, 22050, bits=32)):
        samples, rate = audio.read_wav(data)
        info = audio.wav_info(data)
        assert (info.sample_rate, info.channels, info.frames) == (
            rate,
            samples.shape[1],
            samples.shape[0],
        )
        assert info.duration == samples.shape[0] / rate
    # a never-patched streaming header: frames are what the file holds (a partial one dropped)
    wav = bytearray(audio.write_wav(tone(0.1), 16000))
    wav[40:44] = b"\xff\xff\xff\xff"
    assert audio.wav_info(bytes(wav) + b"\x01").frames == 1600
    assert audio.wav_info(memoryview(bytes(wav))).frames == 1600
    for broken in (b"RIFF", bytes(wav[:30]), b"RIFX" + bytes(wav[4:])):
        with pytest.raises(ValueError) as info_error:
            audio.wav_info(broken)
        with pytest.raises(ValueError) as read_error:
            audio.read_wav(broken)
        assert str(info_error.value) == str(read_error.value)


# --- refused before Whisper -------------------------------------------------------------------


def test_a_one_hertz_wav_is_refused_before_whisper(serve) -> None:
    fake = FakeModel()
    base = start(serve, LocalWhisper(fake, model_id="fake"))
    # 1.2 KB said to be 10 minutes, 32 KB said to be 4 h 26 min, then an absurd high rate
    for data, rate in ((one_hertz_wav(1200), 1), (one_hertz_wav(32000), 1)):
        r = transcribe(base, "bomb.wav", data)
        assert r.status_code == 400
        error = error_of(r)
        assert error["code"] == "unsupported_sample_rate" and error["param"] == "file"
        assert f"sample rate {rate} Hz" in error["message"] and "1000..384000" in error["message"]
    high = audio.write_wav(tone(0.01, 16000), 1_000_000)
    r = transcribe(base, "high.wav", high)
    assert r.status_code == 400 and "1000000 Hz" in error_of(r)["message"]
    assert fake.calls == []
    ok = transcribe(base, "ok.wav", audio.write_wav(tone(1), 16000))
    assert ok.status_code == 200 and len(fake.calls) == 1  # the same server still transcribes


def test_a_wav_over_the_cap_is_413_from_its_header(serve) -> None:
    fake = FakeModel()
    base = start(serve, LocalWhisper(fake, model_id="fake"))
    long_wav = audio.write_wav(np.zeros(1000 * 700, np.float32), 1000)  # 700 s in 1.4 MB
    r = transcribe(base, "long.wav", long_wav)
    assert r.status_code == 413
    error = error_of(r)
    assert error["code"] == "audio_too_long" and error["param"] == "file"
    assert error["type"] == "invalid_request_error"
    assert "700.0 s" in error["message"]
    assert f"max_audio_s = {DEFAULT_CAP}" in error["message"] and "[limits]" in error["message"]
    assert fake.calls == []


def test_a_long_compressed_file_is_413(serve) -> None:
    fake = FakeModel()
    base = start(serve, LocalWhisper(fake, model_id="fake"))
    eleven_minutes = flac(660)  # ~130 KB; FLAC declares its length
    declared = transcribe(base, "long.flac", eleven_minutes)
    assert declared.status_code == 413
    assert "660.0 s" in error_of(declared)["message"]
    # a container that does not say how long it is, and one that lies (claims 1 s):
    # decoding stops at the cap
    for claim in (0, 16000):
        r = transcribe(base, "lying.flac", claiming(eleven_minutes, claim))
        assert r.status_code == 413
        error = error_of(r)
        assert error["code"] == "audio_too_long"
        assert f"more than {DEFAULT_CAP} s" in error["message"]
    assert fake.calls == []
    ok = transcribe(base, "five.flac", claiming(flac(300), 0))
    assert ok.status_code == 200
    assert [c["samples"] for c in fake.calls] == [300 * 16000]


def test_the_config_key_sets_the_cap(serve) -> None:
    clip = audio.write_wav(tone(2), 16000)
    small, default = FakeModel(), FakeModel()
    capped = start(serve, LocalWhisper(small, model_id="fake"), "[limits]\nmax_audio_s = 1.5\n")
    plain = start(serve, LocalWhisper(default, model_id="fake"))
    for name, data in (("clip.wav", clip), ("clip.flac", flac(2))):
        refused = transcribe(capped, name, data)
        assert refused.status_code == 413
        assert "max_audio_s = 1.5" in error_of(refused)["message"]
        assert transcribe(plain, name, data).status_code == 200
    assert small.calls == [] and len(default.calls) == 2

    # the VAD route has the same cap (the real Silero model answers the accepted request)
    for base, status in ((capped, 413), (plain, 200)):
        r = httpx.post(f"{base}/v1/audio/vad", files={"audio": ("a.wav", clip)}, timeout=WAIT)
        assert r.status_code == status
    r = httpx.post(f"{capped}/v1/audio/vad", files={"audio": ("a.wav", clip)}, timeout=WAIT)
    assert "max_audio_s = 1.5" in r.json()["error"] and "2.0 s" in r.json()["error"]


def test_the_vad_route_refuses_a_wav_over_the_default_cap(serve) -> None:
    long_wav = audio.write_wav(np.zeros(8000 * 660, np.float32), 8000)  # 11 min, 10.6 MB
    # The model is a stand-in that fails if it is used: a 413, not a 500, means it was not.
    base = start(serve, vad=object(), max_body_bytes=16 * 1024 * 1024)
    r = httpx.post(f"{base}/v1/audio/vad", files={"audio": ("a.wav", long_wav)}, timeout=WAIT)
    assert r.status_code == 413
    assert f"max_audio_s = {DEFAULT_CAP}" in r.json()["error"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_audio_s = 0", "must be > 0"),
        ("max_audio_s = -5", "must be > 0"),
        ('max_audio_s = "600"', "expected a number"),
        ("max_audio_s = inf", "finite"),
    ],
)
def test_bad_limit_values_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"{API_ONLY}[limits]\n{text}\n", log_issues=False)
    assert "limits.max_audio_s" in str(err.value) and message in str(err.value)
    loaded = parse_config(f"{API_ONLY}[limits]\nmax_audio_s = 90\n", log_issues=False)
    assert loaded.config.limits.max_audio_s == 90
    assert parse_config(API_ONLY, log_issues=False).config.limits.max_audio_s == DEFAULT_CAP


# --- a client that leaves cancels its transcription -------------------------------------------


class WatchedJob:
    """A WhisperJob that tells the test when the server cancels it."""

    def __init__(self, job: WhisperJob) -> None:
        self.job = job
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.job.cancel()
        self.cancelled.set()

    async def details(self) -> Any:
        return await self.job.details()

    async def result(self) -> str:
        return await self.job.result()


class WatchedWhisper(LocalWhisper):
    """LocalWhisper handing out WatchedJobs, each also put on `submitted` (in order)."""

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.submitted: queue.Queue[WatchedJob] = queue.Queue()

    def submit(self, audio: Any, **options: Any) -> Any:
        job = WatchedJob(super().submit(audio, **options))
        self.submitted.put(job)
        return job


def send_and_leave(base: str, data: bytes, engine: WatchedWhisper) -> WatchedJob:
    """POST `data` over a raw socket, wait until the server has submitted its job, then
    close the connection without reading the answer; returns the job."""
    request = httpx.Request(
        "POST", f"{base}/v1/audio/transcriptions", files={"file": ("b.wav", data)}
    )
    body = request.read()
    host = base.removeprefix("http://")
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: {request.headers['content-type']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    ip, port = host.split(":")
    with socket.create_connection((ip, int(port)), timeout=WAIT) as sock:
        sock.sendall(head + body)
        job = engine.submitted.get(timeout=WAIT)
    return job


def test_a_client_that_leaves_the_queue_leaves_no_job_run(serve) -> None:
    fake = FakeModel(gated=True)
    engine = WatchedWhisper(fake, model_id="fake", max_pending=4)
    base = start(serve, engine)
    first: list[httpx.Response] = []
    occupant = threading.Thread(
        target=lambda: first.append(transcribe(base, "a.wav", audio.write_wav(tone(1), 16000)))
    )
    occupant.start()
    try:
        engine.submitted.get(timeout=WAIT)  # the first job ...
        assert fake.entered.wait(WAIT)  # ... runs, holding the worker
        queued = send_and_leave(base, audio.write_wav(tone(2), 16000), engine)
        assert queued.cancelled.wait(10), "the server did not cancel the abandoned job"
    finally:
        fake.release.set()
        occupant.join(WAIT)
    assert first[0].status_code == 200
    # The worker runs jobs in order: had the abandoned one not been dropped, it would run
    # before this one.
    assert transcribe(base, "c.wav", audio.write_wav(tone(3), 16000)).status_code == 200
    assert [c["samples"] for c in fake.calls] == [16000, 48000]
    assert engine.pending == 0


def test_a_client_that_leaves_a_running_job_stops_it_at_the_next_segment(serve) -> None:
    fake = FakeModel(gated=True, segments=5)
    engine = WatchedWhisper(fake, model_id="fake")
    base = start(serve, engine)
    try:
        running = send_and_leave(base, audio.write_wav(tone(2), 16000), engine)
        assert fake.entered.wait(WAIT)  # it is inside the model
        assert running.cancelled.wait(10), "the server did not cancel the abandoned job"
    finally:
        fake.release.set()
    after = transcribe(base, "c.wav", audio.write_wav(tone(1), 16000))  # runs after it
    assert after.status_code == 200 and after.json()["text"] == "hello0 hello1 hello2 hello3 hello4"
    assert [c["samples"] for c in fake.calls] == [32000, 16000]
    assert fake.steps == 1 + 5  # the abandoned job stopped after its first segment

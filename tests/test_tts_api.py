"""TTS over HTTP: OpenAI /v1/audio/speech and the gsv_tts routes, through a real server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import threading
import wave

import httpx
import numpy as np
import openai
import pytest
from harness import api_state

from echokit_fast.audio import float_to_pcm16, pcm16_to_float, read_wav
from echokit_fast.backends.asr.openai import OpenAIASR
from echokit_fast.backends.tts.local import LocalTTS
from echokit_fast.backends.tts.local import engine as tts
from echokit_fast.config import Config, default_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

TEXT = "Hello from the speech server. This is the second sentence."
GATED_TEXT = "First we say hello. Then the second one. Then the third one. Then the last."


class GatedHibari(tts.HibariSpeaker):
    """Real hibari; pieces starting with "Then" wait for `gate`. `released` is set
    when a stream ends (the server let go of it)."""

    def __init__(self, **kwargs):
        self.gate = threading.Event()
        self.held = threading.Event()
        self.released = threading.Event()
        super().__init__(**kwargs)

    def _render(self, model, piece, speed, rng):
        if piece.startswith("Then"):
            self.held.set()
            assert self.gate.wait(30), "the gate was never opened"
        return super()._render(model, piece, speed, rng)

    async def speak(self, *args, **kwargs):
        try:
            async with contextlib.aclosing(super().speak(*args, **kwargs)) as stream:
                async for chunk in stream:
                    yield chunk
        finally:
            self.released.set()


@pytest.fixture(scope="module")
def engine():
    e = tts.HibariSpeaker()
    yield e
    e.close()


@pytest.fixture(scope="module")
def gated_module():
    e = GatedHibari(max_streams=1)
    yield e
    e.gate.set()
    e.close()


@pytest.fixture
def gated(gated_module):
    for ev in (gated_module.gate, gated_module.held, gated_module.released):
        ev.clear()
    yield gated_module
    gated_module.gate.set()
    asyncio.run(gated_module.drain())


def with_tts(section: LocalTTS) -> Config:
    """The default config with [tts] `section` and a remote [asr] (its client is built, never
    used): the app loads this TTS engine at start-up, and no Whisper."""
    asr = OpenAIASR(url="http://127.0.0.1:9/v1/audio/transcriptions")
    return default_config().model_copy(update={"tts": section, "asr": asr})


def server(serve, engine, **ctx_kw) -> str:
    ctx = api_state(**ctx_kw)
    if engine is not None:
        ctx.tts = engine
    return "http://" + serve(create_app(state=ctx))


@pytest.fixture
def url(serve, engine) -> str:
    return server(serve, engine)


def pcm(engine, text, rate) -> bytes:
    """What the API must send: the engine's audio at `rate` as s16le."""
    return float_to_pcm16(engine.synthesize(text, sample_rate=rate))


# --- gsv_tts routes ------------------------------------------------------------------


def test_speakers(url, engine):
    r = httpx.get(f"{url}/v1/audio/speakers")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == engine.voices()
    assert "heart" in r.json()


@pytest.mark.parametrize(
    ("body", "rate"),
    [
        ({"speaker": "heart", "input": TEXT, "sample_rate": 16000}, 16000),  # what EchoKit sends
        ({"voice": "heart", "input": TEXT}, 32000),  # alias, default rate
        ({"input": TEXT, "sample_rate": 44000, "response_format": "ignored"}, 44000),
    ],
)
def test_stream_speech_streams_pcm16_at_the_requested_rate(url, engine, body, rate):
    with httpx.stream("POST", f"{url}/v1/audio/stream_speech", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == f"audio/pcm;rate={rate}"
        assert r.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in r.headers
        data = r.read()
    assert data == pcm(engine, TEXT, rate)
    audio = pcm16_to_float(data)
    assert len(audio) / rate > 1.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.01


def test_batch_speech_is_the_same_stream(url, engine):
    r = httpx.post(f"{url}/v1/audio/batch_speech", json={"speaker": "heart", "input": TEXT})
    assert r.status_code == 200
    assert r.content == pcm(engine, TEXT, 32000)


def test_gsv_shaped_speech_body_gets_a_whole_wav(url, engine):
    body = {"speaker": "heart", "input": TEXT, "sample_rate": 16000}  # EchoKit's gsv platform
    r = httpx.post(f"{url}/v1/audio/speech", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/wav"
    assert int(r.headers["content-length"]) == len(r.content)
    with wave.open(io.BytesIO(r.content)) as w:  # exact sizes: the stdlib reader agrees
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        frames = w.readframes(w.getnframes())
    assert frames == pcm(engine, TEXT, 16000)
    assert len(r.content) == 44 + len(frames)


def test_first_chunk_leaves_before_later_pieces_are_synthesised(serve, gated):
    url = server(serve, gated)
    body = {"speaker": "heart", "input": GATED_TEXT, "sample_rate": 16000}
    with httpx.stream("POST", f"{url}/v1/audio/stream_speech", json=body) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        first = next(chunks)
        # The server is holding piece 2; pieces 3 and 4 do not exist yet.
        assert len(first) > 0
        assert gated.active_streams == 1
        rendered = gated.rendered
        gated.gate.set()
        rest = b"".join(chunks)
    assert gated.rendered == rendered + 3
    assert first + rest == pcm(gated, GATED_TEXT, 16000)


def test_client_disconnect_stops_the_synthesis(serve, gated):
    url = server(serve, gated)
    body = {"speaker": "heart", "input": GATED_TEXT, "sample_rate": 16000}
    start = gated.rendered
    with httpx.stream("POST", f"{url}/v1/audio/stream_speech", json=body) as r:
        chunks = r.iter_raw()
        next(chunks)
        assert gated.held.wait(30)  # piece 2 is being synthesised
    # The connection is closed: the server cancels the request and lets go of the engine.
    assert gated.released.wait(30)
    assert gated.active_streams == 0
    gated.gate.set()
    asyncio.run(gated.drain())
    assert gated.rendered - start == 2  # pieces 3 and 4 were never synthesised


def test_busy_engine_answers_429(serve, gated):
    url = server(serve, gated)  # max_streams=1
    body = {"speaker": "heart", "input": GATED_TEXT, "sample_rate": 16000}
    with httpx.stream("POST", f"{url}/v1/audio/stream_speech", json=body) as r:
        chunks = r.iter_raw()  # (a dropped iterator would close the connection)
        next(chunks)
        second = httpx.post(f"{url}/v1/audio/stream_speech", json=body)
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        assert "busy" in second.text
        oai = httpx.post(f"{url}/v1/audio/speech", json={"input": "Hi.", "voice": "heart"})
        assert oai.status_code == 429
        assert oai.json()["error"]["code"] == "server_busy"
        gated.gate.set()
        assert len(b"".join(chunks)) > 0


HUGE = "word " * 1000  # 5000 characters


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"json": {"speaker": "heart", "input": ""}}, 400, "empty"),
        ({"json": {"speaker": "heart", "input": "  \n"}}, 400, "empty"),
        ({"json": {"speaker": "heart", "input": HUGE}}, 400, "limit is 4096"),
        ({"json": {"speaker": "nobody", "input": "Hi."}}, 400, "unknown voice 'nobody'"),
        ({"json": {"voice": "nobody", "input": "Hi."}}, 400, "available: heart"),
        (
            {"json": {"speaker": "heart", "input": "Hi.", "sample_rate": 44100}},
            400,
            "Unsupported sample rate: 44100, only 48000, 44000, 32000, 24000, 16000, 8000 "
            "are supported",
        ),
        ({"json": {"speaker": "heart", "input": "Hi.", "sample_rate": "16000"}}, 422, "integer"),
        ({"json": {"speaker": "heart"}}, 422, "missing field `input`"),
        ({"json": {"speaker": "heart", "input": 5}}, 422, "must be a string"),
        ({"json": {"speaker": "heart", "voice": "heart", "input": "Hi."}}, 422, "duplicate"),
        ({"json": {"speaker": 7, "input": "Hi."}}, 400, "must be a string"),
        ({"content": b'{"input": "Hi.",', "headers": {"content-type": "application/json"}}, 400,
         "not valid JSON"),
        ({"json": ["Hi."]}, 400, "JSON object"),
        ({"data": {"input": "Hi."}}, 415, "application/json"),
        ({"content": b"x" * (300 * 1024)}, 413, "exceeds the limit"),
    ],
)  # fmt: skip
def test_stream_speech_errors(url, kwargs, status, needle):
    r = httpx.post(f"{url}/v1/audio/stream_speech", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert needle in r.text


def test_methods(url):
    assert httpx.get(f"{url}/v1/audio/stream_speech").status_code == 405
    assert httpx.get(f"{url}/v1/audio/speech").status_code == 405
    assert httpx.post(f"{url}/v1/audio/speakers").status_code == 405


# --- OpenAI /v1/audio/speech ---------------------------------------------------------------


@pytest.fixture
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_openai_client_wav(client, engine):
    reply = client.audio.speech.create(
        model="tts-1", voice="heart", input=TEXT, response_format="wav"
    )
    data = reply.content
    # A streamed WAV: sizes unknown when the header left (0xFFFFFFFF, as OpenAI sends).
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert data[4:8] == data[40:44] == b"\xff\xff\xff\xff"
    audio, rate = read_wav(data)
    assert rate == 24000 and audio.shape[1] == 1
    assert data[44:] == pcm(engine, TEXT, 24000)
    with wave.open(io.BytesIO(data)) as w:  # the stdlib reader copes: reads to the end
        assert w.getframerate() == 24000
        assert w.readframes(w.getnframes()) == data[44:]


def test_openai_client_streaming_pcm_and_defaults(client, engine):
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=TEXT, response_format="pcm", speed=1.0
    ) as reply:
        assert reply.headers["content-type"] == "audio/pcm;rate=24000"
        chunks = list(reply.iter_bytes())
    # "alloy" (an OpenAI voice) means the configured voice.
    assert b"".join(chunks) == pcm(engine, TEXT, 24000)


def test_openai_speed(client, engine):
    normal = client.audio.speech.create(model="m", voice="heart", input=TEXT, response_format="pcm")
    fast = client.audio.speech.create(
        model="m", voice="heart", input=TEXT, response_format="pcm", speed=2.0
    )
    assert fast.content == float_to_pcm16(engine.synthesize(TEXT, sample_rate=24000, speed=2.0))
    assert len(fast.content) < 0.75 * len(normal.content)


@pytest.mark.parametrize(
    ("kwargs", "param", "needle"),
    [
        ({"voice": "nobody"}, "voice", "unknown voice 'nobody'"),
        ({"voice": "heart", "input": ""}, "input", "empty"),
        ({"voice": "heart", "input": HUGE}, "input", "limit is 4096"),
        ({"voice": "heart", "response_format": "ogg"}, "response_format", "'ogg' is not supported"),
        ({"voice": "heart", "speed": 5.0}, "speed", "between 0.25 and 4.0"),
        ({"voice": "heart", "stream_format": "ws"}, "stream_format", "'ws' is not supported"),
    ],
)
def test_openai_errors_through_the_client(client, kwargs, param, needle):
    args = {"model": "tts-1", "input": "Hello.", **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(**args)
    err = info.value.body
    assert info.value.status_code == 400
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert needle in err["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "JSON"),
        ({"json": {"voice": "heart"}}, 400, "missing field `input`"),
        ({"json": {"voice": "heart", "input": "Hi.", "model": 3}}, 400, "`model`"),
        ({"json": {"voice": "heart", "input": "Hi.", "speed": "fast"}}, 400, "`speed`"),
        ({"content": b"x" * (300 * 1024)}, 413, "exceeds the limit"),
    ],
)
def test_openai_errors_raw(url, kwargs, status, needle):
    r = httpx.post(f"{url}/v1/audio/speech", **kwargs)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]


def test_engine_is_loaded_from_the_config_on_first_use(serve):
    # No engine installed in the context: the route builds the configured one.
    ctx = AppState(with_tts(LocalTTS(voice="heart", speed=2.0)), probe_llm=False)
    url = "http://" + serve(create_app(state=ctx))
    r = httpx.post(f"{url}/v1/audio/stream_speech", json={"input": "Hi there.", "speaker": "heart"})
    assert r.status_code == 200
    engine = ctx.tts
    assert isinstance(engine, tts.HibariSpeaker) and engine.speed == 2.0
    assert r.content == pcm(engine, "Hi there.", 32000)
    engine.close()


def test_engine_that_cannot_load_answers_503(serve, monkeypatch):
    monkeypatch.setitem(sys.modules, "piper", None)  # as if piper-tts were not installed
    state = AppState(with_tts(LocalTTS(engine="piper")), probe_llm=False)
    url = "http://" + serve(create_app(state=state))
    r = httpx.post(f"{url}/v1/audio/stream_speech", json={"input": "Hi."})
    assert r.status_code == 503 and "not available" in r.text
    r = httpx.post(f"{url}/v1/audio/speech", json={"input": "Hi.", "voice": "x"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    assert httpx.get(f"{url}/v1/audio/speakers").status_code == 503


# --- CLI ----------------------------------------------------------------------------------


SAY = [sys.executable, "-m", "echokit_fast", "say"]


def test_cli_say(tmp_path):
    out = tmp_path / "out.wav"
    done = subprocess.run(
        [*SAY, "Hello world. How are you?", "-o", str(out), "--rate", "16000", "--voice", "heart"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    audio, rate = read_wav(out.read_bytes())
    assert rate == 16000 and audio.shape[1] == 1
    assert 1.0 < len(audio) / rate < 4.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.01
    assert "16000 Hz" in done.stderr

    bad = subprocess.run(
        [*SAY, "Hi.", "-o", str(tmp_path / "x.wav"), "--voice", "nobody"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "unknown voice 'nobody'" in bad.stderr and "heart" in bad.stderr
    assert not (tmp_path / "x.wav").exists()

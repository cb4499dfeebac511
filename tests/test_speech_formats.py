"""POST /v1/audio/speech in every OpenAI format, streamed, and as Server-Sent Events, through
the `openai` client (sync and async) on a real server."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import av
import httpx
import numpy as np
import openai
import pytest
from harness import api_state
from test_tts_api import GATED_TEXT, GatedHibari

from echokit_fast.audio import float_to_pcm16
from echokit_fast.backends.tts.local import engine as tts
from echokit_fast.server.app import create_app

TEXT = "Hello from the speech server. This is the second sentence."
RATE = 24000
MEDIA = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm;rate=24000",
}


@pytest.fixture(scope="module")
def engine():
    e = tts.HibariSpeaker()
    yield e
    e.close()


@pytest.fixture(scope="module")
def expected(engine) -> np.ndarray:
    return engine.synthesize(TEXT, sample_rate=RATE)


def start(serve, engine) -> str:
    state = api_state()
    state.tts = engine
    return "http://" + serve(create_app(state=state))


def decoded(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Mono float samples and their rate, decoded by PyAV (raw s16le for pcm)."""
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, RATE
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [
            f.to_ndarray().reshape(f.samples, -1).mean(axis=1) for f in container.decode(stream)
        ]
        return np.concatenate(frames).astype(np.float32), stream.rate


def check_audio(data: bytes, fmt: str, expected: np.ndarray) -> None:
    audio, rate = decoded(data, fmt)
    assert rate in (RATE, 48000)  # an Ogg/Opus decoder may give 48 kHz
    seconds, want = len(audio) / rate, len(expected) / RATE
    assert abs(seconds - want) < 0.15, (fmt, seconds, want)  # encoder padding is a few ms
    assert float(np.sqrt(np.mean(audio**2))) > 0.01  # speech, not silence


@pytest.mark.parametrize("fmt", list(MEDIA))
def test_every_format_decodes_to_the_whole_speech(serve, engine, expected, fmt) -> None:
    url = start(serve, engine)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="heart", input=TEXT, response_format=fmt
    ) as reply:
        assert reply.headers["content-type"] == MEDIA[fmt]
        data = reply.read()
    check_audio(data, fmt, expected)


def test_mp3_is_the_default_and_the_async_client_works(serve, engine, expected) -> None:
    url = start(serve, engine)

    async def run() -> bytes:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = await client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
        assert reply.response.headers["content-type"] == "audio/mpeg"
        return reply.content

    data = asyncio.run(run())
    assert data[:3] == b"ID3" or data[0] == 0xFF  # an MP3 stream
    check_audio(data, "mp3", expected)


def test_speed_shortens_every_format(serve, engine) -> None:
    url = start(serve, engine)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    normal = client.audio.speech.create(model="m", voice="heart", input=TEXT, response_format="aac")
    fast = client.audio.speech.create(
        model="m", voice="heart", input=TEXT, response_format="aac", speed=2.0
    )
    assert len(decoded(fast.content, "aac")[0]) < 0.75 * len(decoded(normal.content, "aac")[0])


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac"])
def test_encoded_audio_leaves_before_the_text_is_spoken(serve, fmt) -> None:
    gated = GatedHibari(max_streams=1)
    try:
        url = start(serve, gated)
        body = {"model": "tts-1", "voice": "heart", "input": GATED_TEXT, "response_format": fmt}
        with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=60) as r:
            assert r.status_code == 200
            chunks = r.iter_raw()
            first = next(chunks)
            assert gated.held.wait(30)  # the second piece is held: the rest does not exist yet
            assert len(first) > 0 and gated.rendered == 1  # the first piece only
            gated.gate.set()
            data = first + b"".join(chunks)
        audio, _ = decoded(data, fmt)
        assert len(audio) > RATE  # the four pieces, more than a second
    finally:
        gated.gate.set()
        gated.close()


def _sse_events(lines) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


def test_sse_stream_format_sends_base64_deltas_then_done(serve, engine, expected) -> None:
    url = start(serve, engine)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="heart",
        input=TEXT,
        response_format="pcm",
        stream_format="sse",
    ) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(reply.iter_lines())
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2  # one per sentence at least
    assert events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_tokens"] == len(TEXT.split())
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert pcm == float_to_pcm16(expected)


def test_a_known_voice_that_is_not_installed_is_a_400_naming_it(
    serve, engine, tmp_path, monkeypatch
) -> None:
    import hibari.voices

    monkeypatch.setenv("HIBARI_HOME", str(tmp_path))  # no voice downloaded here
    monkeypatch.setattr(hibari.voices, "BASE_URL", "http://127.0.0.1:9/")  # and no network
    url = start(serve, engine)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="emma", input="Hello.")
    err = info.value.body
    assert err["code"] == "voice_not_installed" and err["param"] == "voice"
    assert "'emma'" in err["message"] and "not installed" in err["message"]
    assert "echokit-fast say Hello --voice emma" in err["message"]
    assert str(tmp_path) in err["message"]

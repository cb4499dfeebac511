"""The optional Piper engine (GPL: never installed by default, so not in the default suite).

Run them for real after installing the extra:

    .venv/bin/python -m uv pip install --python .venv/bin/python -e '.[piper]'
    .venv/bin/python -m pytest tests_piper -p no:cacheprovider
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from starlette.testclient import TestClient

from echokit_fast.audio import pcm16_to_float, resample
from echokit_fast.backends.base import Speaker
from echokit_fast.backends.tts.local import LocalTTS
from echokit_fast.backends.tts.local import engine as tts
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

FOX = "The quick brown fox jumps over the lazy dog."


class Recording(tts.PiperSpeaker):
    """Keeps each piece's native audio (Piper's noise is not seedable)."""

    def __init__(self, **kwargs):
        self.native: list[np.ndarray] = []
        super().__init__(**kwargs)

    def _job(self, voice, piece, speed, rng):
        audio = super()._job(voice, piece, speed, rng)
        self.native.append(audio)
        return audio


@pytest.fixture(scope="module")
def engine():
    e = Recording()
    yield e
    e.close()


async def collect(engine, text, **kw):
    return [c async for c in engine.speak(text, **kw)]


def test_piper_is_a_speaker_with_the_joe_voice(engine):
    assert isinstance(engine, Speaker)
    assert (engine.engine, engine.native_rate, engine.voice) == ("piper", 22050, "joe")
    assert engine.voices() == ["joe"]
    with pytest.raises(tts.UnknownVoice, match="available: joe"):
        engine.resolve_voice("heart")


def test_piper_speech_is_audible_and_plausible(engine):
    audio = np.concatenate(asyncio.run(collect(engine, FOX, sample_rate=22050)))
    words = len(FOX.split())
    assert 0.15 * words < len(audio) / 22050 < 0.8 * words
    assert float(np.sqrt(np.mean(audio**2))) > 0.01


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_piper_rate_conversion(engine, rate):
    engine.native.clear()
    text = "One short sentence. And a second one, a little longer."
    out = np.concatenate(asyncio.run(collect(engine, text, sample_rate=rate)))
    native = np.concatenate(engine.native)
    assert len(engine.native) == 2
    assert len(out) == round(len(native) * rate / 22050)
    np.testing.assert_array_equal(out, resample(native, 22050, rate))


def test_piper_speed(engine):
    normal = engine.synthesize(FOX)
    fast = engine.synthesize(FOX, speed=2.0)
    assert len(fast) < 0.7 * len(normal)


def test_piper_from_config_and_http():
    engine = tts.from_config(LocalTTS(engine="piper", speaker="joe"))
    assert isinstance(engine, tts.PiperSpeaker)
    state = AppState(tts=engine)
    try:
        with TestClient(create_app(state=state)) as client:
            assert client.get("/v1/audio/speakers").json() == ["joe"]
            body = {"speaker": "joe", "input": FOX, "sample_rate": 16000}
            r = client.post("/v1/audio/stream_speech", json=body)
            assert r.status_code == 200
            assert r.headers["content-type"] == "audio/pcm;rate=16000"
            audio = pcm16_to_float(r.content)
            assert 1.0 < len(audio) / 16000 < 6.0
            r = client.post("/v1/audio/speech", json={"input": FOX, "voice": "joe"})
            assert r.status_code == 200 and r.content[:4] == b"RIFF"
    finally:
        engine.close()

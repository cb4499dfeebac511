"""Malformed input to the companion APIs is a clear 400, never a 500 or minutes of work:
JSON nested past the parser's recursion limit on the TTS routes, float WAV files holding a NaN
or an infinity on the VAD and transcription routes (refused by ``read_wav`` itself)."""

from __future__ import annotations

import struct

import httpx
import numpy as np
import pytest
from harness import api_state

from echokit_fast.server.app import create_app

NESTED = b"[" * 100_000 + b"]" * 100_000  # valid JSON, under the 256 KiB body limit


@pytest.fixture
def addr(serve) -> str:
    # no engine is installed: each refusal comes before one is needed
    return serve(create_app(state=api_state()))


def test_deeply_nested_json_is_a_400_on_openai_speech(addr) -> None:
    r = httpx.post(f"http://{addr}/v1/audio/speech", content=NESTED, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "the body is not valid JSON: it is nested too deeply"


def test_deeply_nested_json_is_a_400_on_stream_speech(addr) -> None:
    r = httpx.post(f"http://{addr}/v1/audio/stream_speech", content=NESTED, timeout=30)
    assert r.status_code == 400  # plain text, as every error of this gsv_tts route
    assert r.text == "the body is not valid JSON: it is nested too deeply"


def float_wav(samples: np.ndarray, rate: int = 16000, bits: int = 32) -> bytes:
    """A mono IEEE-float WAV packed by hand (write_wav is not needed to make a bad file)."""
    data = samples.astype("<f4" if bits == 32 else "<f8").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * bits // 8, bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
    body += struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _bad(value: float, bits: int = 32) -> bytes:
    x = np.zeros(8000, np.float64)
    x[4000] = value
    return float_wav(x, bits=bits)


BAD_WAVS = {
    "nan": (_bad(np.nan), "is NaN"),
    "inf": (_bad(-np.inf), "is infinite"),
    "f64-beyond-f32": (_bad(1e300, bits=64), "is infinite"),
}


@pytest.mark.parametrize("case", BAD_WAVS)
def test_a_non_finite_float_wav_is_a_400_on_vad(addr, case) -> None:
    wav, what = BAD_WAVS[case]
    r = httpx.post(f"http://{addr}/v1/audio/vad", files={"audio": ("a.wav", wav)}, timeout=30)
    assert r.status_code == 400
    message = r.json()["error"]
    assert f"sample 4000 (frame 4000, channel 0) {what}" in message
    assert "float WAV samples must be finite" in message


@pytest.mark.parametrize("case", BAD_WAVS)
def test_a_non_finite_float_wav_is_a_400_on_transcriptions(addr, case) -> None:
    wav, what = BAD_WAVS[case]
    files = {"file": ("a.wav", wav, "audio/wav")}
    r = httpx.post(f"http://{addr}/v1/audio/transcriptions", files=files, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "file",
        "invalid_audio",
    )
    assert f"sample 4000 (frame 4000, channel 0) {what}" in error["message"]

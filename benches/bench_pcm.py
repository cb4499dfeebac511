"""PCM conversion, channel mixing and WAV reading: echokit_fast vs numpy / Python `wave`.

Timed run:
    .venv/bin/python -m pytest benches/bench_pcm.py --benchmark-enable --benchmark-only
Each group holds `ours` and its peer, measured in the same run on the same input.
"""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from echokit_fast.audio import float_to_pcm16, pcm16_to_float, read_wav, to_mono, write_wav

RNG = np.random.default_rng(1234)
# 10 s of 48 kHz stereo, interleaved.
STEREO_F32 = RNG.uniform(-1, 1, 48_000 * 10 * 2).astype(np.float32)
STEREO_I16 = (STEREO_F32 * 32767).astype(np.int16)
# PCM sizes: one EchoKit 512 ms frame at 16 kHz mono, and 10 s of 48 kHz stereo.
SIZES = {"frame8k": 8192, "10s48kst": STEREO_F32.size}
WAVS = {
    "10s16kmono": write_wav(RNG.uniform(-1, 1, 160_000).astype(np.float32), 16_000),
    "10s48kst": write_wav(STEREO_F32.reshape(-1, 2), 48_000),
}


# --- to_mono ---------------------------------------------------------------------------


def np_mono_f32(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 2).mean(axis=1)


def np_mono_i16(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 2).astype(np.float32).mean(1) / 32768


@pytest.mark.parametrize("impl", ["ours", "numpy"])
def test_to_mono_stereo_f32(benchmark, impl):
    benchmark.group = "to_mono stereo float32 10s@48k"
    fn = (lambda: to_mono(STEREO_F32, 2)) if impl == "ours" else (lambda: np_mono_f32(STEREO_F32))
    out = benchmark(fn)
    np.testing.assert_array_equal(out, np_mono_f32(STEREO_F32))


@pytest.mark.parametrize("impl", ["ours", "numpy"])
def test_to_mono_stereo_i16(benchmark, impl):
    benchmark.group = "to_mono stereo int16 10s@48k"
    fn = (lambda: to_mono(STEREO_I16, 2)) if impl == "ours" else (lambda: np_mono_i16(STEREO_I16))
    out = benchmark(fn)
    np.testing.assert_array_equal(out, np_mono_i16(STEREO_I16))


# --- PCM16 <-> float ----------------------------------------------------------------------


def np_pcm16_to_float(b: bytes) -> np.ndarray:
    return np.frombuffer(b, "<i2").astype(np.float32) / 32768


def np_float_to_pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("impl", ["ours", "numpy"])
def test_pcm16_to_float(benchmark, impl, size):
    benchmark.group = f"pcm16_to_float {size}"
    b = STEREO_I16[: SIZES[size]].tobytes()
    fn = (lambda: pcm16_to_float(b)) if impl == "ours" else (lambda: np_pcm16_to_float(b))
    out = benchmark(fn)
    np.testing.assert_array_equal(out, np_pcm16_to_float(b))


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("impl", ["ours", "numpy"])
def test_float_to_pcm16(benchmark, impl, size):
    benchmark.group = f"float_to_pcm16 {size}"
    x = STEREO_F32[: SIZES[size]] * np.float32(1.05)  # some samples saturate
    fn = (lambda: float_to_pcm16(x)) if impl == "ours" else (lambda: np_float_to_pcm16(x))
    out = benchmark(fn)
    assert out == np_float_to_pcm16(x)


# --- read_wav ------------------------------------------------------------------------------


def wave_numpy_read(b: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(b)) as w:
        ch, rate = w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, "<i2").astype(np.float32).reshape(-1, ch) / 32768, rate


@pytest.mark.parametrize("size", list(WAVS))
@pytest.mark.parametrize("impl", ["ours", "wave+numpy"])
def test_read_wav(benchmark, impl, size):
    benchmark.group = f"read_wav 16-bit {size}"
    b = WAVS[size]
    fn = (lambda: read_wav(b)) if impl == "ours" else (lambda: wave_numpy_read(b))
    x, rate = benchmark(fn)
    want, want_rate = wave_numpy_read(b)
    assert rate == want_rate
    np.testing.assert_array_equal(x, want)

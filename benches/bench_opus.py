"""Opus 120 ms frames (encode + decode) vs opuslib, and vowel_of vs a numpy pipeline.

Timed run:
    .venv/bin/python -m pytest benches/bench_opus.py --benchmark-enable --benchmark-only

Peers:
- ``opuslib``: ctypes bindings to the same system libopus, with the same settings
  (mono, VOIP, defaults); the float32 <-> int16 conversion a Python caller needs is
  done with numpy and timed too, as ours converts internally.
- ``vowel_numpy``: the lip_sync pipeline (pre-emphasis, Hamming, autocorrelation,
  Levinson-Durbin order 20, 1024-point LPC envelope, formant peaks, polygons)
  written with numpy, vectorised where numpy allows.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import opuslib
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from vowel_synth import A_, E_, I_, O_, U_, synth_vowel, to_i16

from echokit_fast.audio import OpusDecoder, OpusEncoder, vowel_of

SR = 16000
FRAME = 1920


# A, I, U, E, O (codes 1, 3, 5, 2, 4 from the original lip_sync crate), f0 = 120 Hz.
VOWEL_FORMANTS = [A_, I_, U_, E_, O_]
VOWEL_CODES = [1, 3, 5, 2, 4]
FRAMES = [synth_vowel(f, 120.0, FRAME) for f in VOWEL_FORMANTS]
FRAMES_I16 = [to_i16(f) for f in FRAMES]


# ---------------------------------------------------------------- Opus


def _ours_round(enc: OpusEncoder, dec: OpusDecoder, frame: np.ndarray) -> np.ndarray:
    (packet,) = enc.push(frame)
    return dec.decode(packet)


def _opuslib_round(enc, dec, frame: np.ndarray) -> np.ndarray:
    pcm = np.clip(np.round(frame * 32768.0), -32768, 32767).astype(np.int16)
    packet = enc.encode(pcm.tobytes(), FRAME)
    return np.frombuffer(dec.decode(packet, FRAME), np.int16) / np.float32(32768)


def _run_codec(benchmark, round_fn, enc, dec):
    frames = itertools.cycle(FRAMES)
    out = benchmark(lambda: round_fn(enc, dec, next(frames)))
    assert out.shape == (FRAME,)
    assert out.dtype == np.float32
    assert np.sqrt(np.mean(out**2)) > 0.01  # decoded speech-like audio, not silence


@pytest.mark.benchmark(group="opus 120 ms frame: encode + decode (float32 in/out)")
def test_opus_frame_ours(benchmark):
    _run_codec(benchmark, _ours_round, OpusEncoder(), OpusDecoder())


@pytest.mark.benchmark(group="opus 120 ms frame: encode + decode (float32 in/out)")
def test_opus_frame_opuslib(benchmark):
    enc = opuslib.Encoder(SR, 1, opuslib.APPLICATION_VOIP)
    _run_codec(benchmark, _opuslib_round, enc, opuslib.Decoder(SR, 1))


def test_opus_peers_agree():
    # Same libopus, same settings: identical packets.
    ours = OpusEncoder()
    ref = opuslib.Encoder(SR, 1, opuslib.APPLICATION_VOIP)
    for f, pcm in zip(FRAMES, FRAMES_I16, strict=True):  # same int16 (np.round) samples
        assert ours.push(f) == [ref.encode(pcm.tobytes(), FRAME)]


# ---------------------------------------------------------------- vowels

_POLYGONS = [
    (1, [(500, 0), (1500, 0), (1500, 2800), (700, 3100), (800, 2800), (580, 1900), (600, 1900),
         (600, 1500)]),
    (3, [(0, 2000), (200, 2100), (300, 3000), (800, 2800), (700, 3100), (500, 3200), (550, 5000),
         (0, 5000)]),
    (5, [(0, 800), (600, 1900), (580, 1900), (200, 2100), (0, 2000)]),
    (2, [(200, 2100), (580, 1900), (800, 2800), (300, 3000)]),
    (4, [(0, 0), (500, 0), (650, 1500), (600, 1900), (0, 800)]),
    (4, [(500, 3200), (700, 3100), (1500, 2800), (1500, 5000), (550, 5000)]),
]  # fmt: skip
_ORDER = SR // 1000 + 4
_N = 1024
_WINDOW = (
    0.54 - 0.46 * np.cos(2 * np.pi * np.arange(_N, dtype=np.float32) / np.float32(_N - 1))
).astype(np.float32)
_MAX_BIN = min(int(5000 / (SR / 1024)), 1024 // 2 - 1)


def _inside(x: float, y: float, poly) -> bool:
    inside = False
    j = len(poly) - 1
    for i in range(len(poly)):
        (xi, yi), (xj, yj) = poly[i], poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def vowel_numpy(frame: np.ndarray) -> int:
    """The lip_sync pipeline in numpy (int16 frame, first 1024 samples, /32767)."""
    x = frame[:_N].astype(np.float32) / np.float32(32767)
    y = x.copy()
    y[1:] -= np.float32(0.97) * x[:-1]
    y *= _WINDOW
    acf = np.correlate(y, y, mode="full")[_N - 1 : _N + _ORDER]
    if not acf[0] > 0:
        return 0
    acf = acf / acf[0]
    alpha = np.zeros(_ORDER + 1, np.float64)
    alpha[0] = 1.0
    err = float(acf[0])
    for i in range(1, _ORDER + 1):
        k = -(acf[i] + np.dot(alpha[1:i], acf[i - 1 : 0 : -1])) / err
        alpha[1:i] = alpha[1:i] + k * alpha[i - 1 : 0 : -1]
        alpha[i] = k
        err *= 1.0 - k * k
        if err == 0.0:
            return 0
    env = -2.0 * np.log(np.abs(np.fft.rfft(alpha, 1024)[: _MAX_BIN + 1]))
    mid = env[1:_MAX_BIN]
    peaks = np.flatnonzero((mid > env[: _MAX_BIN - 1]) & (mid > env[2 : _MAX_BIN + 1])) + 1
    if len(peaks) < 2:
        return 0
    f1, f2 = peaks[:2] * (SR / 1024)
    for code, poly in _POLYGONS:
        if _inside(f1, f2, poly):
            return code
    return 0


def _run_vowels(benchmark, fn):
    codes = benchmark(lambda: [fn(f) for f in FRAMES_I16])
    assert codes == VOWEL_CODES


@pytest.mark.benchmark(group="vowel of one 120 ms frame (x5 frames)")
def test_vowel_ours(benchmark):
    _run_vowels(benchmark, vowel_of)


@pytest.mark.benchmark(group="vowel of one 120 ms frame (x5 frames)")
def test_vowel_numpy(benchmark):
    _run_vowels(benchmark, vowel_numpy)

"""Formant synthesis of vowel frames, shared by tests/test_vowel.py and benches/bench_opus.py."""

from __future__ import annotations

import numpy as np

SR = 16000


def resonate(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    """Two-pole resonator (one formant) applied to x."""
    r = np.exp(-np.pi * bandwidth / SR)
    a1, a2 = 2 * r * np.cos(2 * np.pi * freq / SR), -r * r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for i, v in enumerate(x):
        y0 = v + a1 * y1 + a2 * y2
        y[i] = y0
        y2, y1 = y1, y0
    return y


def synth_vowel(formants, f0: float = 120.0, n: int = 1920, amp: float = 0.5) -> np.ndarray:
    """Formant synthesis: an impulse train at f0 through a cascade of resonators."""
    x = np.zeros(n)
    x[:: round(SR / f0)] = 1.0
    for freq, bw in formants:
        x = resonate(x, freq, bw)
    return (amp * x / np.max(np.abs(x))).astype(np.float32)


def to_i16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


A_ = [(800, 80), (1200, 90), (2500, 120)]
I_ = [(200, 60), (3000, 150)]
U_ = [(280, 60), (1500, 90), (2500, 120)]
E_ = [(450, 70), (2200, 100), (2800, 120)]
O_ = [(450, 70), (800, 80), (2600, 120)]

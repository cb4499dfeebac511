"""Resampler quality measurements shared by tests/test_resample.py and
benches/bench_resample.py, applicable to any one-shot resampling function
``fn(x: float32 array) -> float32 array`` (ours, soxr, ...).

All figures are relative to a full-scale (amplitude 1) input; numpy only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Fn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]

# Fractions of the stopband probed by the sine tests, dense near its edge.
EDGE_GRID = (0.0005, 0.002, 0.005, 0.01, 0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95)


def sine(freq: float, rate: int, n: int) -> npt.NDArray[np.float32]:
    return np.sin(2 * np.pi * freq * np.arange(n) / rate).astype(np.float32)


def _middle(y: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """The middle 60 % (no start/end transients)."""
    n = len(y)
    return np.asarray(y[n // 5 : 4 * n // 5], dtype=np.float64)


def _fit(y: npt.NDArray[np.float64], freq: float, rate: int) -> npt.NDArray[np.float64]:
    """Least-squares fit of a sine + cosine at ``freq`` to ``y``."""
    w = 2 * np.pi * freq * np.arange(len(y)) / rate
    basis = np.stack([np.sin(w), np.cos(w)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return basis @ coef


def _level_db(y: npt.NDArray[np.float64]) -> float:
    """Peak-equivalent level of ``y`` (rms * sqrt 2) in dB re amplitude 1."""
    rms = float(np.sqrt(np.mean(y * y)))
    return 20 * np.log10(max(rms * np.sqrt(2), 1e-30))


def tone_gain_db(fn: Fn, from_rate: int, to_rate: int, freq: float, seconds: float = 0.5) -> float:
    """Gain (dB) of the resampler for a sine at ``freq``."""
    y = _middle(fn(sine(freq, from_rate, int(from_rate * seconds))))
    return _level_db(_fit(y, freq, to_rate))


def passband_deviation_db(fn: Fn, from_rate: int, to_rate: int, edge: float = 0.9) -> float:
    """Largest |gain| (dB) over sines up to ``edge`` x the lower Nyquist frequency."""
    nyq = min(from_rate, to_rate) / 2
    freqs = np.linspace(edge * nyq / 12, edge * nyq, 12)
    return max(abs(tone_gain_db(fn, from_rate, to_rate, f)) for f in freqs)


def stopband_attenuation_db(fn: Fn, from_rate: int, to_rate: int, seconds: float = 0.5) -> float:
    """Worst suppression (dB, positive) of what lands in the output from the stopband.

    Downsampling: sines above the output's Nyquist frequency (up to the input's)
    must vanish; their aliases are measured. Upsampling: sines below the input's
    Nyquist frequency keep their tone, the rest of the output (the images above
    it) is measured after removing the tone by least squares. Frequencies come
    from ``EDGE_GRID``, dense near Nyquist where a filter is weakest.
    """
    nyq = min(from_rate, to_rate) / 2
    n = int(from_rate * seconds)
    worst = np.inf
    for g in EDGE_GRID:
        if from_rate > to_rate:
            freq = nyq + (from_rate / 2 - nyq) * g
            rest = _middle(fn(sine(freq, from_rate, n)))
        else:
            freq = nyq * (1 - g)
            y = _middle(fn(sine(freq, from_rate, n)))
            rest = y - _fit(y, freq, to_rate)
        worst = min(worst, -_level_db(rest))
    return float(worst)


def chirp(f0: float, f1: float, rate: int, seconds: float) -> npt.NDArray[np.float32]:
    """Linear sweep from ``f0`` to ``f1`` Hz."""
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))).astype(np.float32)


def _band_powers(
    y: npt.NDArray[np.floating], rate: int, edges: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Mean-square power of ``y`` in each band ``edges[k]..edges[k+1]`` (Hz)."""
    y = np.asarray(y, dtype=np.float64)
    # Tukey window (10 % raised-cosine tapers): applied to a sweep it weights
    # time and so frequency, identically for input and output, and its smooth
    # ends keep the sweep's spectrum from leaking far beyond its range.
    n = len(y)
    taper = n // 10
    w = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(taper) / taper)
    w[:taper] = ramp
    w[n - taper :] = ramp[::-1]
    spec = np.abs(np.fft.rfft(y * w)) ** 2 / (np.sum(w * w) * len(y))
    freqs = np.fft.rfftfreq(len(y), 1 / rate)
    idx = np.searchsorted(freqs, edges)
    return np.array([spec[a:b].sum() for a, b in itertools.pairwise(idx)])


def sweep_passband_deviation_db(fn: Fn, from_rate: int, to_rate: int, edge: float = 0.9) -> float:
    """Largest |gain| (dB) in 40 bands up to ``edge`` x Nyquist, from a sweep.

    The sweep runs a little beyond the measured range so every band is inside
    it; gain = output band power / input band power.
    """
    nyq = min(from_rate, to_rate) / 2
    x = chirp(0.0, min(1.0, edge + 0.05) * nyq, from_rate, 2.0)
    y = fn(x)
    edges = np.linspace(0.02 * nyq, edge * nyq, 41)
    ratio = _band_powers(y, to_rate, edges) / _band_powers(x, from_rate, edges)
    return float(np.max(np.abs(10 * np.log10(ratio))))


def sweep_stopband_attenuation_db(fn: Fn, from_rate: int, to_rate: int) -> float:
    """Worst suppression (dB, positive) of stopband content, from a sweep.

    Downsampling: a 2 s sweep over the band above the output's Nyquist
    frequency; every output sample is alias, its level is taken in 10 ms
    windows (the first and last 5 % skipped: onset transients). Upsampling: a
    sweep over 0.05..0.95 x the input's Nyquist; the image power in 40 bands between 1.1 and 1.9 x
    Nyquist is compared with the sweep's power in the mirrored input band
    (0.1..0.9 x Nyquist, clear of the sweep's ends and their spectral skirts;
    the stopband's very edge is covered by ``stopband_attenuation_db``).
    """
    nyq = min(from_rate, to_rate) / 2
    if from_rate > to_rate:
        x = chirp(nyq, from_rate / 2, from_rate, 2.0)
        y = np.asarray(fn(x), dtype=np.float64)
        # Every output sample is alias: its level in 10 ms windows, skipping
        # the first and last 5 % (onset/offset transients).
        win = to_rate // 100
        k0, k1 = len(y) // 20 // win, (len(y) - len(y) // 20) // win
        frames = y[: len(y) // win * win].reshape(-1, win)[k0:k1]
        return float(-max(_level_db(fr) for fr in frames))
    x = chirp(0.05 * nyq, 0.95 * nyq, from_rate, 2.0)
    y = fn(x)
    # Images of input band [a, b] sit at [from - b, from - a].
    edges = np.linspace(0.1 * nyq, 0.9 * nyq, 41)
    images = _band_powers(y, to_rate, from_rate - edges[::-1])[::-1]
    level = float((images / _band_powers(x, from_rate, edges)).max())
    return float(-10 * np.log10(max(level, 1e-30)))

"""Resampler: API contract, chunking invariance, delay accounting, errors, quality.

Quality is measured with the helpers in benches/resample_quality.py (the same
ones the benchmark reports with), on sines and sweeps, for several rate pairs
in both directions.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echokit_fast.audio import Resampler, resample

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import resample_quality as q

PAIRS = [
    (24000, 16000),
    (44100, 16000),
    (48000, 8000),
    (11025, 8000),
    (32000, 22050),
    (16000, 24000),
    (16000, 48000),
    (8000, 44100),
    (22050, 32000),
    (11025, 48000),
    # Half-band 2:1 stages ahead of the polyphase one: one, and a cascade of two.
    (48000, 16000),
    (44100, 8000),
]
# Reduced numerator above 1024: the interpolated-table path.
ODD_PAIRS = [(44101, 16000), (16000, 44101)]


def _noise(n: int, seed: int = 7) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.3).astype(np.float32)


def _expected_len(n: int, f: int, t: int) -> int:
    # round half up, exact in integers
    return (2 * n * t + f) // (2 * f)


# --- contract -------------------------------------------------------------


@pytest.mark.parametrize(("f", "t"), PAIRS + ODD_PAIRS)
def test_one_shot_length_and_dtype(f: int, t: int) -> None:
    for n in (0, 1, 2, 5, 441, 1000, 4801):
        y = resample(_noise(n), f, t)
        assert y.dtype == np.float32 and y.ndim == 1
        assert len(y) == _expected_len(n, f, t)


def test_identity_for_equal_rates() -> None:
    x = _noise(1234)
    y = resample(x, 16000, 16000)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    r = Resampler(22050, 22050)
    assert r.delay == 0
    np.testing.assert_array_equal(r.process(x[:10]), x[:10])
    assert len(r.flush()) == 0


@pytest.mark.parametrize(("f", "t"), PAIRS + ODD_PAIRS)
def test_chunked_stream_equals_one_shot(f: int, t: int) -> None:
    x = _noise(6000)
    whole = resample(x, f, t)
    rng = np.random.default_rng(3)
    for sizes in ([480], [1], [7], None):
        r = Resampler(f, t)
        parts, pos = [], 0
        while pos < len(x):
            size = int(rng.integers(0, 700)) if sizes is None else sizes[0]
            parts.append(r.process(x[pos : pos + size]))
            pos += size
        parts.append(r.flush())
        got = np.concatenate(parts)
        assert len(got) == len(whole)
        np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    n=st.integers(0, 3000),
)
def test_any_chunking_property(pair: tuple[int, int], cuts: list[int], n: int) -> None:
    f, t = pair
    x = _noise(n, seed=n)
    bounds = sorted(min(c, n) for c in cuts)
    r = Resampler(f, t)
    pieces = [r.process(p) for p in np.split(x, bounds)]
    got = np.concatenate([*pieces, r.flush()])
    np.testing.assert_allclose(got, resample(x, f, t), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("f", "t"), PAIRS)
def test_delay_bounds_what_is_held_back(f: int, t: int) -> None:
    r = Resampler(f, t)
    d = r.delay
    assert d > 0
    assert (r.from_rate, r.to_rate) == (f, t)
    x = _noise(4000)
    emitted = 0
    for n_in in range(1, len(x) + 1, 37):
        emitted += len(r.process(x[n_in - 1 : min(n_in + 36, len(x))]))
        total = _expected_len(min(n_in + 36, len(x)), f, t)
        held = total - emitted
        assert 0 <= held <= d
        if emitted:
            assert held >= d - 1
    assert len(r.flush()) == _expected_len(len(x), f, t) - emitted


def test_delay_matches_filter_latency() -> None:
    # An impulse's peak comes out where it went in (aligned), but only after
    # about `delay` more output samples have been requested.
    r = Resampler(48000, 16000)
    x = np.zeros(48000, np.float32)
    x[24000] = 1.0
    y = np.concatenate([r.process(x), r.flush()])
    assert int(np.argmax(np.abs(y))) == 8000
    r.reset()
    first = r.process(x[: 24000 + 3])
    assert len(first) < 8000 + 1  # the peak needs later input
    assert 8000 - len(first) <= r.delay


def test_flush_resets_and_reset_forgets() -> None:
    x = _noise(3000)
    r = Resampler(24000, 16000)
    a = np.concatenate([r.process(x), r.flush()])
    b = np.concatenate([r.process(x), r.flush()])
    np.testing.assert_array_equal(a, b)
    r.process(_noise(500, seed=1))
    r.reset()
    c = np.concatenate([r.process(x), r.flush()])
    np.testing.assert_array_equal(a, c)
    assert len(r.flush()) == 0  # empty stream


def test_other_dtypes_are_converted() -> None:
    x16 = (np.random.default_rng(1).integers(-20000, 20000, 3000)).astype(np.int16)
    as_float = x16.astype(np.float32) / 32768
    np.testing.assert_array_equal(resample(x16, 44100, 16000), resample(as_float, 44100, 16000))
    x64 = as_float.astype(np.float64)
    np.testing.assert_array_equal(resample(x64, 44100, 16000), resample(as_float, 44100, 16000))
    r = Resampler(44100, 16000)
    np.testing.assert_array_equal(
        np.concatenate([r.process(x16), r.flush()]), resample(as_float, 44100, 16000)
    )
    # non-contiguous float32 view
    strided = np.repeat(as_float, 2)[::2]
    np.testing.assert_array_equal(resample(strided, 44100, 16000), resample(as_float, 44100, 16000))
    assert len(resample([0.0, 0.5, 1.0], 8000, 16000)) == 6


def test_threads_share_and_separate_safely() -> None:
    x = _noise(48000)
    want = resample(x, 48000, 16000)
    results: list[np.ndarray] = []

    def work() -> None:
        r = Resampler(48000, 16000)
        out = [r.process(x[i : i + 960]) for i in range(0, len(x), 960)]
        results.append(np.concatenate([*out, r.flush()]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 4
    for got in results:
        np.testing.assert_array_equal(got, want)
    # One object fed from several threads: calls are serialised, so every
    # sample of input is consumed exactly once (the output length adds up).
    shared = Resampler(48000, 16000)
    lens: list[int] = []

    def feed() -> None:
        for i in range(0, 12000, 480):
            lens.append(len(shared.process(x[i : i + 480])))

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(lens) + len(shared.flush()) == _expected_len(4 * 12000, 48000, 16000)


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("f", "t", "needle"),
    [
        (7999, 16000, "from_rate must be between 8000 and 48000 Hz, got 7999"),
        (16000, 48001, "to_rate must be between 8000 and 48000 Hz, got 48001"),
        (0, 16000, "got 0"),
        (-16000, 16000, "got -16000"),
        (16000.0, 8000, "from_rate must be an integer number of Hz"),
        (16000, "8000", "to_rate must be an integer number of Hz"),
        (True, 8000, "got True"),
        (2**70, 8000, str(2**70)),
    ],
)
def test_bad_rates(f: object, t: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        Resampler(f, t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        resample(np.zeros(4, np.float32), f, t)  # type: ignore[arg-type]


def test_numpy_integer_rates_accepted() -> None:
    r = Resampler(np.int64(24000), np.int32(16000))  # type: ignore[arg-type]
    assert (r.from_rate, r.to_rate) == (24000, 16000)


def test_bad_input() -> None:
    r = Resampler(24000, 16000)
    with pytest.raises(ValueError, match=r"1-D \(mono audio only\).*\(2, 480\)"):
        r.process(np.zeros((2, 480), np.float32))
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((480, 2), np.float32), 24000, 16000)
    with pytest.raises(ValueError, match="dtype float32, float64 or int16, got int32"):
        r.process(np.zeros(10, np.int32))
    with pytest.raises(ValueError, match=r"numpy array.*got list"):
        r.process([0.0, 1.0])  # type: ignore[arg-type]
    # the stream is untouched by rejected calls
    x = _noise(1000)
    np.testing.assert_array_equal(
        np.concatenate([r.process(x), r.flush()]), resample(x, 24000, 16000)
    )


# --- quality ------------------------------------------------------------------


def _ours(f: int, t: int):
    return lambda x: resample(x, f, t)


@pytest.mark.parametrize(("f", "t"), PAIRS + ODD_PAIRS)
def test_passband_flat_with_sines(f: int, t: int) -> None:
    assert q.passband_deviation_db(_ours(f, t), f, t) < 0.1


@pytest.mark.parametrize(("f", "t"), PAIRS + ODD_PAIRS)
def test_stopband_with_sines(f: int, t: int) -> None:
    assert q.stopband_attenuation_db(_ours(f, t), f, t) >= 80.0


@pytest.mark.parametrize(("f", "t"), PAIRS)
def test_passband_and_stopband_with_sweeps(f: int, t: int) -> None:
    assert q.sweep_passband_deviation_db(_ours(f, t), f, t) < 0.1
    assert q.sweep_stopband_attenuation_db(_ours(f, t), f, t) >= 80.0


def test_quality_helpers_catch_a_bad_resampler() -> None:
    # Linear interpolation aliases and droops: the helpers must say so.
    def linear(x: np.ndarray) -> np.ndarray:
        n_out = _expected_len(len(x), 24000, 16000)
        return np.interp(np.arange(n_out) * 1.5, np.arange(len(x)), x).astype(np.float32)

    assert q.stopband_attenuation_db(linear, 24000, 16000) < 40
    assert q.sweep_stopband_attenuation_db(linear, 24000, 16000) < 40
    assert q.passband_deviation_db(linear, 24000, 16000) > 0.5


def test_output_aligned_with_input() -> None:
    # A tone keeps its phase: compare with the ideal tone at the output rate.
    for f, t in PAIRS:
        y = resample(q.sine(440.0, f, f), f, t)
        ideal = q.sine(440.0, t, len(y))
        mid = slice(len(y) // 5, 4 * len(y) // 5)
        assert np.max(np.abs(y[mid] - ideal[mid])) < 1e-3

"""The native Whisper log-mel features (``_native.whisper_log_mel``) against faster-whisper's
numpy FeatureExtractor, and with ``normalize`` against the transformers recipe Smart Turn v3
uses (a numpy port below)."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from echokit_fast import _native


def _clip(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.6)
    return (tone + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", [401, 16000, 16123, 128000])
def test_matches_faster_whisper(n: int) -> None:
    x = _clip(n)
    got = _native.whisper_log_mel(x)
    want = FeatureExtractor(feature_size=80)(x, padding=0)
    assert got.shape == want.shape == (80, n // 160)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_normalize_is_zero_mean_unit_variance_first() -> None:
    x = np.concatenate([np.zeros(40000, np.float32), _clip(88000)])
    norm = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    want = FeatureExtractor(feature_size=80)(norm.astype(np.float32), padding=0)
    np.testing.assert_allclose(_native.whisper_log_mel(x, normalize=True), want, atol=2e-5)


def test_int16_is_scaled_by_32768() -> None:
    x = (_clip(16000) * 32768).astype(np.int16)
    np.testing.assert_allclose(
        _native.whisper_log_mel(x), _native.whisper_log_mel(x.astype(np.float32) / 32768), atol=0
    )


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(200, np.float32),
        np.zeros((2, 1000), np.float32),
        np.zeros(1000, np.float64),
        np.array([0.0, np.nan] * 300, np.float32),
        b"\x00" * 1000,
    ],
)
def test_bad_input_is_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        _native.whisper_log_mel(bad)  # type: ignore[arg-type]

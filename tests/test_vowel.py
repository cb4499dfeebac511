"""Lip-sync vowels (docs/protocol.md#vowels): `vowel_of` must give the codes echokit_server gives.

Every expected code below was produced by the original `lip_sync` crate
(recognize_vowel_from_pcm, via echokit_server's i16 -> /32767 path) on exactly
these synthesized frames, not by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vowel_synth import A_, E_, I_, O_, U_, synth_vowel, to_i16

from echokit_fast.audio import (
    VOWEL_A,
    VOWEL_E,
    VOWEL_I,
    VOWEL_NAMES,
    VOWEL_NONE,
    VOWEL_O,
    VOWEL_U,
    OpusEncoder,
    vowel_of,
)

# (formants, f0, code from the original crate on the float frame and on its int16 version)
VOWELS = [
    (A_, 100, VOWEL_A),
    (A_, 120, VOWEL_A),
    (A_, 200, VOWEL_A),
    (I_, 100, VOWEL_I),
    (I_, 120, VOWEL_I),
    (I_, 150, VOWEL_I),
    (U_, 100, VOWEL_U),
    (U_, 150, VOWEL_U),
    (U_, 250, VOWEL_U),
    (E_, 100, VOWEL_E),
    (E_, 120, VOWEL_E),
    (E_, 250, VOWEL_E),
    (O_, 100, VOWEL_O),
    (O_, 150, VOWEL_O),
    (O_, 200, VOWEL_O),
]


@pytest.mark.parametrize(("formants", "f0", "code"), VOWELS)
def test_synthesized_vowels_match_reference(formants, f0, code):
    x = synth_vowel(formants, f0)
    assert vowel_of(x) == code
    assert vowel_of(to_i16(x)) == code


# A grid over the (F1, F2) plane, f0 = 130 Hz, F3 = 2900 Hz, int16 frames; expected
# codes from the original crate, row by row (F1 = 250, 350, ..., 950).
GRID_F1 = list(range(250, 1000, 100))
GRID_F2 = list(range(900, 3000, 200))
GRID_EXPECTED = [
    [4, 4, 4, 5, 5, 5, 2, 2, 5, 4, 4],
    [4, 4, 4, 4, 5, 5, 2, 2, 2, 4, 4],
    [4, 4, 4, 4, 5, 5, 2, 2, 4, 4, 4],
    [4, 4, 4, 4, 4, 5, 4, 4, 4, 4, 4],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
]


def grid_frame(f1: int, f2: int) -> np.ndarray:
    return to_i16(synth_vowel([(f1, 70), (f2, 100), (2900, 130)], f0=130.0))


def test_vowel_grid_matches_reference():
    got = [[vowel_of(grid_frame(f1, f2)) for f2 in GRID_F2] for f1 in GRID_F1]
    assert got == GRID_EXPECTED


def test_silence_and_degenerate_frames_are_none():
    assert vowel_of(np.zeros(1920, np.float32)) == VOWEL_NONE
    assert vowel_of(np.zeros(1920, np.int16)) == VOWEL_NONE
    assert vowel_of(np.zeros(0, np.float32)) == VOWEL_NONE
    assert vowel_of(np.full(1920, np.nan, np.float32)) == VOWEL_NONE
    assert vowel_of(np.full(1920, np.inf, np.float32)) == VOWEL_NONE


def test_short_frames():
    x = synth_vowel(A_, 120)
    # At most LPC-order (20) samples: nothing to analyse.
    for n in (1, 2, 10, 20):
        assert vowel_of(x[:n]) == VOWEL_NONE
    # From 21 samples on it analyses whatever it gets, without error.
    for n in (21, 100, 512, 1023):
        assert vowel_of(x[:n]) in range(6)


def test_only_first_1024_samples_matter():
    x = synth_vowel(A_, 120)
    assert vowel_of(x) == vowel_of(x[:1024]) == VOWEL_A
    y = x.copy()
    y[1024:] = np.random.default_rng(1).normal(0, 0.5, 1920 - 1024).astype(np.float32)
    assert vowel_of(y) == VOWEL_A
    # ...and the first 1024 do matter.
    z = x.copy()
    z[:1024] = 0
    assert vowel_of(z) == VOWEL_NONE


def test_int16_is_scaled_by_32767_like_the_reference():
    rng = np.random.default_rng(7)
    for _ in range(50):
        formants = [(rng.uniform(250, 900), 80), (rng.uniform(900, 2800), 100), (2900, 130)]
        pcm = to_i16(synth_vowel(formants, f0=rng.uniform(90, 250)))
        assert vowel_of(pcm) == vowel_of((pcm[:1024] / np.float32(32767)).astype(np.float32))


def test_encoder_vowels_are_vowel_of_each_frame():
    frames = [synth_vowel(f, 120) for f in (A_, I_, U_, E_, O_)]
    pcm = np.concatenate([*frames, frames[0][:700]])
    enc = OpusEncoder()
    pairs = enc.push_with_vowels(pcm[:2500]) + enc.push_with_vowels(pcm[2500:])
    assert [v for _, v in pairs] == [VOWEL_A, VOWEL_I, VOWEL_U, VOWEL_E, VOWEL_O]
    assert all(isinstance(p, bytes) and 0 < len(p) <= 1280 for p, _ in pairs)
    (packet, v), *rest = enc.flush_with_vowels()
    assert rest == []
    assert 0 < len(packet) <= 1280
    padded = np.concatenate([to_i16(frames[0][:700]), np.zeros(1220, np.int16)])
    assert v == vowel_of(padded)


def test_vowel_names():
    assert [VOWEL_NAMES[c] for c in (VOWEL_A, VOWEL_E, VOWEL_I, VOWEL_O, VOWEL_U)] == list("AEIOU")
    assert VOWEL_NAMES[VOWEL_NONE] == ""


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        (np.zeros((2, 1920), np.float32), "1-D"),
        (np.zeros(1920, np.float64), "float32 or int16"),
        (np.zeros(1920, np.int32), "float32 or int16"),
        ([0.0] * 1920, "numpy array"),
        (b"\x00" * 3840, "numpy array"),
    ],
)
def test_bad_frames(arg, match):
    with pytest.raises(ValueError, match=match):
        vowel_of(arg)


@pytest.mark.parametrize("rate", [0, -16000, 7999, 48001, 2**40])
def test_bad_sample_rate(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        vowel_of(np.zeros(1920, np.float32), rate)


def test_non_contiguous_frame():
    x = synth_vowel(A_, 120)
    strided = np.repeat(x, 2)[::2]
    assert not strided.flags.c_contiguous
    assert vowel_of(strided) == VOWEL_A


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=0, max_size=1920))
def test_any_int16_frame_gives_a_code(samples):
    pcm = np.array(samples, dtype=np.int16)
    code = vowel_of(pcm)
    assert code in range(6)
    assert vowel_of(pcm) == code  # deterministic

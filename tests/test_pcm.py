"""PCM16 <-> float conversion and channel mixing (echokit_fast.audio, native `pcm`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from echokit_fast.audio import float_to_pcm16, pcm16_to_float, to_mono

ALL_I16 = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def np_float_to_pcm16(x: np.ndarray) -> bytes:
    """The documented rule written with numpy: round half to even, saturate, NaN -> 0."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.asarray(x, dtype=np.float32) * np.float32(32768)
        v = np.where(np.isnan(v), np.float32(0), v)
        return np.clip(np.round(v), -32768, 32767).astype("<i2").tobytes()


# --- pcm16_to_float -------------------------------------------------------------


def test_pcm16_to_float_every_value_from_bytes():
    data = ALL_I16.astype("<i2").tobytes()
    out = pcm16_to_float(data)
    assert out.dtype == np.float32
    assert out.shape == (65536,)
    np.testing.assert_array_equal(out, ALL_I16.astype(np.float32) / np.float32(32768))
    assert out[0] == -1.0
    assert out[-1] == np.float32(32767 / 32768)


def test_pcm16_to_float_is_little_endian():
    # 0x0100 little-endian is 1, not 256.
    np.testing.assert_array_equal(pcm16_to_float(b"\x01\x00\x00\x01"), [1 / 32768, 256 / 32768])


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "memoryview_h", "slice"])
def test_pcm16_to_float_bytes_like(kind):
    ints = np.array([0, 1, -1, 32767, -32768, 1234], dtype="<i2")
    raw = ints.tobytes()
    data = {
        "bytearray": bytearray(raw),
        "memoryview": memoryview(raw),
        "memoryview_h": memoryview(ints),  # format 'h', not 'B'
        "slice": memoryview(b"xx" + raw)[2:],
    }[kind]
    np.testing.assert_array_equal(pcm16_to_float(data), ints / np.float32(32768))


def test_pcm16_to_float_int16_arrays():
    rng = np.random.default_rng(1)
    ints = rng.integers(-32768, 32768, 1001).astype(np.int16)
    want = ints.astype(np.float32) / np.float32(32768)
    np.testing.assert_array_equal(pcm16_to_float(ints), want)
    np.testing.assert_array_equal(pcm16_to_float(ints.astype(">i2")), want)  # big-endian dtype
    np.testing.assert_array_equal(pcm16_to_float(ints[::3]), want[::3])  # strided


@pytest.mark.parametrize("n", [1, 3, 4095])
def test_pcm16_to_float_odd_byte_count_is_error(n):
    with pytest.raises(ValueError, match=rf"odd number of bytes \({n}\)"):
        pcm16_to_float(b"\x00" * n)
    with pytest.raises(ValueError, match=rf"odd number of bytes \({n}\)"):
        pcm16_to_float(bytearray(n))


def test_pcm16_to_float_empty():
    out = pcm16_to_float(b"")
    assert out.dtype == np.float32
    assert out.shape == (0,)


def test_pcm16_to_float_rejects_other_inputs():
    with pytest.raises(ValueError, match="int16 array, got dtype int32"):
        pcm16_to_float(np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="int16 array, got dtype float32"):
        pcm16_to_float(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"1-D int16 array, got shape \(2, 2\)"):
        pcm16_to_float(np.zeros((2, 2), np.int16))
    with pytest.raises(ValueError, match="got list"):
        pcm16_to_float([1, 2])  # type: ignore[arg-type]


# --- float_to_pcm16 -------------------------------------------------------------


def test_float_to_pcm16_matches_numpy_on_random_and_specials():
    rng = np.random.default_rng(2)
    x = np.concatenate(
        [
            rng.uniform(-1.2, 1.2, 10_000),
            [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 1e30, -1e30, np.inf, -np.inf, np.nan],
            np.arange(-8, 8) / 2 / 32768,  # exact half-LSB ties
        ]
    ).astype(np.float32)
    assert float_to_pcm16(x) == np_float_to_pcm16(x)


def test_float_to_pcm16_saturation_nan_and_rounding():
    x = np.array(
        [1.0, -1.0, 1.5, -1.5, np.inf, -np.inf, np.nan, 0.5 / 32768, 1.5 / 32768, 2.5 / 32768],
        dtype=np.float32,
    )
    x = np.append(x, np.float32(-2.5 / 32768))
    got = np.frombuffer(float_to_pcm16(x), "<i2").tolist()
    assert got == [32767, -32768, 32767, -32768, 32767, -32768, 0, 0, 2, 2, -2]


def test_float_to_pcm16_output_is_little_endian_bytes():
    out = float_to_pcm16(np.array([256 / 32768], np.float32))
    assert isinstance(out, bytes)
    assert out == b"\x00\x01"


def test_float_to_pcm16_accepts_float64_and_strided():
    x = np.linspace(-1, 1, 101)
    assert float_to_pcm16(x) == np_float_to_pcm16(x.astype(np.float32))
    assert float_to_pcm16(x.astype(np.float32)[::2]) == np_float_to_pcm16(x[::2])
    assert float_to_pcm16(x.astype(">f4")) == np_float_to_pcm16(x)  # big-endian dtype


def test_float_to_pcm16_rejects_other_inputs():
    with pytest.raises(ValueError, match="got dtype int16"):
        float_to_pcm16(np.zeros(3, np.int16))
    with pytest.raises(ValueError, match="got dtype float16"):
        float_to_pcm16(np.zeros(3, np.float16))
    with pytest.raises(ValueError, match=r"got shape \(3, 2\)"):
        float_to_pcm16(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="got bytes"):
        float_to_pcm16(b"\x00\x00")  # type: ignore[arg-type]


def test_pcm16_round_trip_every_value():
    data = ALL_I16.astype("<i2").tobytes()
    assert float_to_pcm16(pcm16_to_float(data)) == data


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(0, 300), elements=st.floats(width=32)))
def test_float_to_pcm16_property(x):
    assert float_to_pcm16(x) == np_float_to_pcm16(x)


# --- to_mono --------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 8, 11])
def test_to_mono_float32_matches_numpy_mean(channels):
    rng = np.random.default_rng(channels)
    x = rng.uniform(-1, 1, 997 * channels).astype(np.float32)
    want = x.reshape(-1, channels).mean(axis=1)
    got = to_mono(x, channels)
    assert got.dtype == np.float32
    assert got.shape == (997,)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # 2-D (frames, channels) gives the same
    np.testing.assert_array_equal(to_mono(x.reshape(-1, channels), channels), got)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 8])
def test_to_mono_int16_matches_numpy(channels):
    rng = np.random.default_rng(100 + channels)
    x = rng.integers(-32768, 32768, 501 * channels).astype(np.int16)
    want = x.reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768
    got = to_mono(x, channels)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(to_mono(x.reshape(-1, channels), channels), got)


def test_to_mono_stereo_is_exact_average():
    x = np.array([1.0, 3.0, -2.0, 4.0, 0.25, 0.5], np.float32)
    np.testing.assert_array_equal(to_mono(x, 2), [2.0, 1.0, 0.375])
    xi = np.array([-32768, -32768, 16384, 0, 100, 101], np.int16)
    np.testing.assert_array_equal(to_mono(xi, 2), [-1.0, 0.25, 100.5 / 32768])


def test_to_mono_one_channel_returns_float32_copy():
    x = np.array([0.5, -0.25], np.float32)
    y = to_mono(x, 1)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(x, y)
    y[0] = 9.0
    assert x[0] == 0.5
    np.testing.assert_array_equal(to_mono(np.array([16384], np.int16), 1), [0.5])


def test_to_mono_non_contiguous_and_other_dtypes():
    rng = np.random.default_rng(7)
    frames = rng.uniform(-1, 1, (50, 3)).astype(np.float32)
    want = frames.mean(axis=1)
    np.testing.assert_allclose(to_mono(np.asfortranarray(frames), 3), want, rtol=1e-6)
    big = rng.uniform(-1, 1, 600).astype(np.float32)
    np.testing.assert_allclose(to_mono(big[::2], 3), big[::2].reshape(-1, 3).mean(1), rtol=1e-6)
    np.testing.assert_allclose(to_mono(frames.astype(np.float64), 3), want, rtol=1e-6)
    xi = rng.integers(-32768, 32768, 40).astype(">i2")
    np.testing.assert_allclose(
        to_mono(xi, 2), xi.reshape(-1, 2).astype(np.float32).mean(1) / 32768, rtol=1e-6
    )


def test_to_mono_errors():
    with pytest.raises(ValueError, match=r"7 samples is not a whole number of 2-channel frames"):
        to_mono(np.zeros(7, np.float32), 2)
    with pytest.raises(ValueError, match="channels must be >= 1, got 0"):
        to_mono(np.zeros(4, np.float32), 0)
    with pytest.raises(ValueError, match="channels must be >= 1, got -2"):
        to_mono(np.zeros(4, np.int16), -2)
    with pytest.raises(ValueError, match=r"shape \[5, 2\] .* but channels=3"):
        to_mono(np.zeros((5, 2), np.float32), 3)
    with pytest.raises(ValueError, match="3-D"):
        to_mono(np.zeros((2, 2, 2), np.float32), 2)
    with pytest.raises(ValueError, match="float32 or int16 array, got dtype int32"):
        to_mono(np.zeros(4, np.int32), 2)
    with pytest.raises(ValueError, match="got list"):
        to_mono([0.0, 1.0], 2)  # type: ignore[arg-type]


def test_to_mono_empty():
    out = to_mono(np.zeros(0, np.float32), 2)
    assert out.shape == (0,)
    assert out.dtype == np.float32


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 8).flatmap(
        lambda c: st.tuples(
            st.just(c),
            hnp.arrays(
                np.float32,
                st.integers(0, 40).map(lambda f, c=c: f * c),
                elements=st.floats(-1, 1, width=32),
            ),
        )
    )
)
def test_to_mono_property(case):
    channels, x = case
    np.testing.assert_allclose(
        to_mono(x, channels), x.reshape(-1, channels).mean(axis=1), rtol=1e-5, atol=1e-7
    )

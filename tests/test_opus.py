"""Opus as EchoKit uses it (docs/protocol.md#opus): 16 kHz mono VOIP, 120 ms frames, no tail
loss."""

from __future__ import annotations

import threading

import numpy as np
import opuslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opuslib.api import encoder as opuslib_encoder

from echokit_fast.audio import (
    OPUS_FRAME_MS,
    OPUS_MAX_PACKET,
    OPUS_SAMPLE_RATES,
    OpusDecoder,
    OpusEncoder,
)

SR = 16000
FRAME = 1920


def sine(n: int, freq: float = 440.0, amp: float = 0.5, start: int = 0) -> np.ndarray:
    t = np.arange(start, start + n) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_all(chunks, enc: OpusEncoder | None = None) -> list[bytes]:
    enc = enc or OpusEncoder()
    packets = []
    for c in chunks:
        packets += enc.push(c)
    return packets + enc.flush()


def decode_all(packets, dec: OpusDecoder | None = None) -> np.ndarray:
    dec = dec or OpusDecoder()
    out = [dec.decode(p) for p in packets]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def test_defaults_are_echokit_settings():
    enc = OpusEncoder()
    assert (enc.sample_rate, enc.frame_size, enc.pending) == (16000, 1920, 0)
    assert OPUS_MAX_PACKET == 1280
    assert OpusDecoder().sample_rate == 16000


@pytest.mark.parametrize(
    "sizes",
    [
        [0],
        [1],
        [1919],
        [1920],
        [1921],
        [3840],
        [1, 1919],
        [1919, 1],
        [1919, 2],
        [700, 700, 700, 700],
        [0, 0, 5000, 0, 3],
        [320] * 13,
        [8000, 8000, 8000],
    ],
)
def test_length_accounting(sizes):
    total = sum(sizes)
    chunks, start = [], 0
    for s in sizes:
        chunks.append(sine(s, start=start))
        start += s
    enc = OpusEncoder()
    packets, pushed = [], 0
    for c in chunks:
        packets += enc.push(c)
        pushed += len(c)
        assert enc.pending == pushed % FRAME
        assert len(packets) == pushed // FRAME
    assert len(packets) == total // FRAME
    assert enc.pending == total % FRAME
    tail = enc.flush()
    assert len(tail) == (1 if total % FRAME else 0)
    assert enc.pending == 0
    assert enc.flush() == []
    decoded = decode_all(packets + tail)
    assert decoded.dtype == np.float32
    assert len(decoded) == -(-total // FRAME) * FRAME


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), max_size=8))
def test_length_accounting_property(sizes):
    enc = OpusEncoder()
    count, seen = 0, 0
    for s in sizes:
        count += len(enc.push(np.zeros(s, np.float32)))
        seen += s
        assert enc.pending == seen % FRAME
        assert count == seen // FRAME
    count += len(enc.flush())
    assert count == -(-seen // FRAME)


def test_short_chunk_is_not_lost():
    # The reference drops a TTS chunk shorter than one frame entirely.
    enc, dec = OpusEncoder(), OpusDecoder()
    assert enc.push(sine(1000)) == []
    assert enc.pending == 1000
    (packet,) = enc.flush()
    out = dec.decode(packet)
    assert len(out) == FRAME
    assert np.sqrt(np.mean(out**2)) > 0.05  # the burst is audible, not silence


def test_round_trip_quality():
    n = 2 * SR
    x = sine(n)
    y = decode_all(encode_all([x[:5000], x[5000:]]))
    assert len(y) == -(-n // FRAME) * FRAME
    # Find the codec delay by cross-correlation, then compare aligned signals.
    lags = range(0, 800)
    delay = max(lags, key=lambda k: float(np.dot(x[: n - 800], y[k : k + n - 800])))
    a = x[1000 : n - 1000]
    b = y[1000 + delay : n - 1000 + delay]
    corr = np.corrcoef(a, b)[0, 1]
    snr = 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2))
    assert corr > 0.999, corr  # measured 0.99991
    assert snr > 25, snr  # measured 37.3 dB (delay 321 samples)


def test_packets_identical_to_libopus_via_opuslib():
    # Same libopus, same settings as echokit_server (mono, VOIP, defaults).
    rng = np.random.default_rng(3)
    x = np.concatenate([sine(9600), rng.normal(0, 0.2, 9600).astype(np.float32)])
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    ref = opuslib.Encoder(SR, 1, opuslib.APPLICATION_VOIP)
    # opuslib's low-level call, to pass the reference's 1280-byte packet cap.
    expected = [
        opuslib_encoder.encode(ref.encoder_state, pcm[i : i + FRAME].tobytes(), FRAME, 1280)
        for i in range(0, len(pcm), FRAME)
    ]
    assert OpusEncoder().push(x) == expected
    assert OpusEncoder().push(pcm) == expected  # int16 input: the same packets
    # And our decoder matches libopus' decoder sample for sample.
    ref_dec = opuslib.Decoder(SR, 1)
    ours = OpusDecoder()
    for p in expected:
        want = np.frombuffer(ref_dec.decode(p, FRAME), np.int16)
        np.testing.assert_array_equal(ours.decode(p), want / np.float32(32768))


@pytest.mark.parametrize("amp", [0.01, 0.5, 1.0, 4.0])
def test_packet_size_limit(amp):
    rng = np.random.default_rng(5)
    noise = (amp * rng.uniform(-1, 1, FRAME * 25)).astype(np.float32)
    packets = OpusEncoder().push(noise)
    assert len(packets) == 25
    assert all(0 < len(p) <= OPUS_MAX_PACKET for p in packets)
    for rate in (24000, 48000):
        enc = OpusEncoder(rate, 120)
        loud = (amp * rng.uniform(-1, 1, enc.frame_size * 5)).astype(np.float32)
        assert all(0 < len(p) <= OPUS_MAX_PACKET for p in enc.push(loud))


def test_float_conversion_saturates_and_maps_nan_to_zero():
    assert OpusEncoder().push(np.full(FRAME, 5.0, np.float32)) == OpusEncoder().push(
        np.full(FRAME, 32767, np.int16)
    )
    assert OpusEncoder().push(np.full(FRAME, -5.0, np.float32)) == OpusEncoder().push(
        np.full(FRAME, -32768, np.int16)
    )
    assert OpusEncoder().push(np.full(FRAME, np.nan, np.float32)) == OpusEncoder().push(
        np.zeros(FRAME, np.int16)
    )


def test_float_rounding_is_half_to_even_like_numpy():
    x = (np.arange(-10, 10, dtype=np.float32) + np.float32(0.5)) / np.float32(32768)
    x = np.resize(x, FRAME).astype(np.float32)
    assert OpusEncoder().push(x) == OpusEncoder().push(np.round(x * 32768).astype(np.int16))


def test_encoder_reset():
    x = sine(FRAME * 3)
    fresh = OpusEncoder().push(x)
    enc = OpusEncoder()
    enc.push(sine(FRAME * 2 + 500, freq=1000))
    assert enc.pending == 500
    enc.reset()
    assert enc.pending == 0
    assert enc.flush() == []
    assert enc.push(x) == fresh  # codec state reset too: bit-identical packets
    # Without a reset the codec state differs.
    other = OpusEncoder()
    other.push(sine(FRAME * 2, freq=1000))
    assert other.push(x) != fresh


def test_decoder_reset():
    packets = OpusEncoder().push(sine(FRAME * 4))
    fresh = decode_all(packets)
    dec = OpusDecoder()
    decode_all(OpusEncoder().push(sine(FRAME * 3, freq=1500)), dec)
    assert not np.array_equal(decode_all(packets, dec), fresh)
    dec.reset()
    np.testing.assert_array_equal(decode_all(packets, dec), fresh)


def test_corrupt_packets_raise_and_decoder_stays_usable():
    packets = OpusEncoder().push(sine(FRAME * 2))
    dec = OpusDecoder()
    with pytest.raises(ValueError, match="empty"):
        dec.decode(b"")
    with pytest.raises(ValueError, match="corrupt"):
        dec.decode(b"\x03\x00")  # code-3 packet with zero frames
    with pytest.raises(ValueError, match="corrupt"):
        dec.decode(b"\xff" + b"\x00" * 3)  # code 3, frame count 0
    with pytest.raises(ValueError, match="bytes"):
        dec.decode("not bytes")
    with pytest.raises(ValueError, match="bytes"):
        dec.decode(np.zeros(10, np.uint8))
    out = dec.decode(bytearray(packets[0]))
    assert len(out) == FRAME
    assert len(dec.decode(packets[1])) == FRAME


@pytest.mark.parametrize("complexity", [0, 4, 9])
def test_complexity_is_libopus_own(complexity):
    x = np.concatenate([sine(9600), np.random.default_rng(5).normal(0, 0.2, 9600)])
    x = x.astype(np.float32)
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    ref = opuslib.Encoder(SR, 1, opuslib.APPLICATION_VOIP)
    ref.complexity = complexity
    expected = [
        opuslib_encoder.encode(ref.encoder_state, pcm[i : i + FRAME].tobytes(), FRAME, 1280)
        for i in range(0, len(pcm), FRAME)
    ]
    enc = OpusEncoder(SR, 120, complexity)
    assert enc.complexity == complexity
    assert enc.push(x) == expected
    if complexity != OpusEncoder().complexity:
        assert OpusEncoder().push(x) != expected  # the setting is applied, not ignored


@pytest.mark.parametrize("complexity", [-1, 11, 100])
def test_bad_complexity(complexity):
    with pytest.raises(ValueError, match=r"complexity must be from 0 to 10"):
        OpusEncoder(SR, 120, complexity)


def test_all_rates_and_frame_durations():
    for rate in OPUS_SAMPLE_RATES:
        for ms in OPUS_FRAME_MS:
            enc = OpusEncoder(rate, ms)
            assert enc.frame_size == round(rate * ms / 1000)
            x = np.zeros(enc.frame_size * 2 + 1, np.float32)
            packets = enc.push(x) + enc.flush()
            assert len(packets) == 3
            dec = OpusDecoder(rate)
            assert sum(len(dec.decode(p)) for p in packets) == 3 * enc.frame_size


@pytest.mark.parametrize("rate", [0, -1, 44100, 22050, 32000, 96000, 2**40])
def test_bad_sample_rates(rate):
    with pytest.raises(ValueError, match=r"sample_rate.*Opus rates"):
        OpusEncoder(rate)
    with pytest.raises(ValueError, match=r"sample_rate.*Opus rates"):
        OpusDecoder(rate)


@pytest.mark.parametrize("ms", [0, 1, 2, 3, 15, 30, 121, 240, -20, float("nan")])
def test_bad_frame_durations(ms):
    with pytest.raises(ValueError, match="frame_ms"):
        OpusEncoder(16000, ms)


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        (np.zeros((2, 960), np.float32), "1-D"),
        (np.zeros(1920, np.float64), "float32 or int16"),
        (np.zeros(1920, np.int32), "float32 or int16"),
        ([0.0] * 1920, "numpy array"),
        (b"\x00" * 3840, "numpy array"),
    ],
)
def test_bad_pcm(arg, match):
    enc = OpusEncoder()
    with pytest.raises(ValueError, match=match):
        enc.push(arg)
    with pytest.raises(ValueError, match=match):
        enc.push_with_vowels(arg)
    assert enc.pending == 0  # nothing half-consumed


def test_non_contiguous_input():
    x = sine(FRAME * 2)
    strided = np.repeat(x, 2)[::2]
    assert not strided.flags.c_contiguous
    assert OpusEncoder().push(strided) == OpusEncoder().push(x)


def test_threads_with_separate_codecs():
    # The GIL is released while encoding; codecs in parallel threads must not interfere.
    x = sine(FRAME * 20)
    expected = OpusEncoder().push(x)
    results: list[list[bytes]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        enc = OpusEncoder()
        for k in range(0, len(x), 1000):
            results[i] += enc.push(x[k : k + 1000])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)

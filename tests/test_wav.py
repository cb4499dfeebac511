"""WAV reading/writing (echokit_fast.audio.read_wav / write_wav, native `wav`).

Fixtures come from two other writers: Python's `wave` module and sox (which
writes WAVE_FORMAT_EXTENSIBLE headers for integer samples with > 2 channels or
> 16 bits, and `fact` chunks for non-PCM formats; EXTENSIBLE with a float
sub-format is built by hand below). Decoded samples are compared
with an independent numpy decoding of the same bytes, and (for sox files) with
sox's own decoding to raw float.
"""

from __future__ import annotations

import io
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from echokit_fast.audio import (
    float_to_pcm16,
    is_wav,
    read_wav,
    wav_header,
    wav_info,
    write_wav,
)

GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


# --- an independent reference decoder (struct + numpy) ---------------------------


def chunks(b: bytes) -> dict[bytes, tuple[int, int]]:
    """id -> (body offset, declared size) for every chunk of a well-formed RIFF file."""
    out: dict[bytes, tuple[int, int]] = {}
    pos = 12
    while pos + 8 <= len(b):
        cid, size = b[pos : pos + 4], struct.unpack_from("<I", b, pos + 4)[0]
        out.setdefault(cid, (pos + 8, size))
        pos += 8 + size + (size & 1)
    return out


def ref_decode(b: bytes) -> tuple[np.ndarray, int, int]:
    """(float32 (frames, channels), rate, format tag incl. 0xFFFE) by numpy."""
    c = chunks(b)
    fo, _ = c[b"fmt "]
    tag, ch, rate, _, align, bits = struct.unpack_from("<HHIIHH", b, fo)
    kind = struct.unpack_from("<H", b, fo + 24)[0] if tag == 0xFFFE else tag
    do, dsize = c[b"data"]
    raw = b[do : do + dsize]
    if kind == 3:
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif bits == 24:
        u = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = u[:, 0] | (u[:, 1] << 8) | (u[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / np.float32(1 << 23)
    else:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / np.float32(2**31)
    assert align == ch * bits // 8
    return x.reshape(-1, ch), rate, tag


def sox_decode(path: Path, channels: int) -> np.ndarray:
    """sox's own decoding of `path` to float32 (frames, channels)."""
    raw = subprocess.run(
        ["sox", str(path), "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, "<f4").reshape(-1, channels)


# --- fixtures written by sox ---------------------------------------------------------

# (rate, channels, sox encoding args, expected format tag in the header)
SOX_CASES = [
    (44100, 2, ["-b", "24"], 0xFFFE),
    (16000, 1, ["-b", "16"], 1),
    (48000, 3, ["-b", "16"], 0xFFFE),
    (8000, 1, ["-b", "8"], 1),
    (11025, 3, ["-b", "8"], 0xFFFE),
    (8000, 2, ["-b", "32"], 0xFFFE),
    (24000, 6, ["-b", "24"], 0xFFFE),
    (22050, 1, ["-b", "32", "-e", "floating-point"], 3),
    (8000, 1, ["-b", "64", "-e", "floating-point"], 3),
    (32000, 4, ["-b", "32", "-e", "floating-point"], 3),  # sox keeps tag 3 for float
]


@pytest.fixture(scope="module")
def sox_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sox")


def sox_synth(path: Path, rate: int, channels: int, enc: list[str]) -> None:
    # Different tones per channel plus noise, 0.9 full scale; -R: repeatable dither/noise.
    tones = []
    for i in range(channels):
        tones += ["sine", str(220 * (i + 1))]
    subprocess.run(
        [
            *("sox", "-R", "-V1", "-r", str(rate), "-c", str(channels), "-n", *enc, str(path)),
            *("synth", "3001s", *tones, "vol", "0.9"),
        ],
        check=True,
    )


@pytest.mark.parametrize(("rate", "channels", "enc", "tag"), SOX_CASES)
def test_read_sox_files(sox_dir, rate, channels, enc, tag):
    path = sox_dir / f"{rate}_{channels}_{'_'.join(enc)}.wav"
    sox_synth(path, rate, channels, enc)
    b = path.read_bytes()
    want, want_rate, got_tag = ref_decode(b)
    assert got_tag == tag  # the header really is the kind this case is meant to cover
    x, sr = read_wav(b)
    assert sr == rate == want_rate
    assert x.dtype == np.float32
    assert x.shape == (3001, channels)
    np.testing.assert_array_equal(x, want)
    # sox's own decoder: exact up to 24 bits; its int32 -> float rounding can differ
    # from numpy's by 1 ulp; float files go through sox's int32 samples.
    tol = 1e-6 if "floating-point" in enc else 6e-8 if enc == ["-b", "32"] else 0
    np.testing.assert_allclose(x, sox_decode(path, channels), rtol=0, atol=tol)
    assert np.abs(x).max() > 0.5  # the tones are really there


def test_read_sox_unsupported_encodings(sox_dir):
    for enc, msg in [
        ("mu-law", r"format tag 0x0007 \(mu-law\)"),
        ("a-law", r"format tag 0x0006 \(A-law\)"),
        ("ms-adpcm", r"format tag 0x0002 \(MS ADPCM\)"),
    ]:
        path = sox_dir / f"{enc}.wav"
        subprocess.run(
            ["sox", "-R", "-V1", "-n", "-r", "8000", "-e", enc, str(path), "synth", "0.1", "sine"],
            check=True,
        )
        with pytest.raises(ValueError, match=msg):
            read_wav(path.read_bytes())


# --- fixtures written by Python's wave module --------------------------------------


def wave_file(ints: np.ndarray, width: int, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(ints.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 1:
            raw = ints.astype(np.uint8).tobytes()
        elif width == 3:
            u = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
            raw = u.tobytes()
        else:
            raw = ints.astype(f"<i{width}").tobytes()
        w.writeframes(raw)
    return buf.getvalue()


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_read_python_wave_files(width, channels, rate):
    rng = np.random.default_rng(width * 100 + channels * 10 + rate % 7)
    bits = 8 * width
    if width == 1:
        lo, hi = 0, 256
    else:
        lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    ints = rng.integers(lo, hi, (257, channels), dtype=np.int64)
    ints[0, 0], ints[1, 0] = lo, hi - 1  # the extremes
    b = wave_file(ints, width, rate)
    x, sr = read_wav(b)
    assert sr == rate
    assert x.shape == (257, channels)
    if width == 1:
        want = (ints.astype(np.float32) - 128) / 128
    else:
        want = ints.astype(np.float32) / np.float32(2 ** (bits - 1))
    np.testing.assert_array_equal(x, want)
    assert x.min() == -1.0


# --- writing -------------------------------------------------------------------------


def test_write_wav_canonical_header_spec_5_4():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 1000).astype(np.float32)
    pcm = float_to_pcm16(x)
    want = (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )
    assert write_wav(x, 16000) == want


def test_write_wav_16_is_readable_by_python_wave():
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (300, 2)).astype(np.float32)
    b = write_wav(x, 44100)
    with wave.open(io.BytesIO(b)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 44100)
        assert w.getnframes() == 300
        assert w.readframes(300) == float_to_pcm16(x.reshape(-1))


@pytest.mark.parametrize("bits", [16, 32])
def test_write_wav_is_readable_by_sox(tmp_path, bits):
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (400, 3)).astype(np.float32)
    path = tmp_path / "ours.wav"
    path.write_bytes(write_wav(x, 24000, bits=bits))
    info = subprocess.run(["soxi", str(path)], check=True, capture_output=True, text=True).stdout
    assert "24000" in info
    assert "Channels       : 3" in info
    want = x if bits == 32 else np.frombuffer(float_to_pcm16(x.reshape(-1)), "<i2") / 32768
    np.testing.assert_allclose(sox_decode(path, 3).reshape(-1), want.reshape(-1), atol=1e-7)


def test_write_wav_float32_header():
    x = np.array([[0.5, -0.25], [1.5, np.inf]], np.float32)
    b = write_wav(x, 22050, bits=32)
    assert len(b) == 58 + 16
    assert b[:4] == b"RIFF" and struct.unpack_from("<I", b, 4)[0] == len(b) - 8
    assert b[12:16] == b"fmt " and struct.unpack_from("<I", b, 16)[0] == 18
    assert struct.unpack_from("<HHIIHHH", b, 20) == (3, 2, 22050, 22050 * 8, 8, 32, 0)
    assert b[38:42] == b"fact" and struct.unpack_from("<II", b, 42) == (4, 2)
    assert b[50:54] == b"data" and struct.unpack_from("<I", b, 54)[0] == 16
    assert b[58:] == x.astype("<f4").tobytes()  # written unchanged, the infinity too
    with pytest.raises(ValueError, match=r"sample 3 \(frame 1, channel 1\) is infinite"):
        read_wav(b)
    y, sr = read_wav(write_wav(x[:1], 22050, bits=32))
    assert sr == 22050
    np.testing.assert_array_equal(y, x[:1])


def test_write_wav_accepts_float64_and_1d_is_mono():
    b = write_wav(np.array([0.5, -0.5]), 8000)
    y, _ = read_wav(b)
    assert y.shape == (2, 1)
    np.testing.assert_array_equal(y[:, 0], [0.5, -0.5])
    assert write_wav(np.array([0.5, -0.5], ">f4"), 8000) == b  # big-endian float32 too


def test_write_wav_errors():
    x = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"bits must be 16 .* or 32 .*, got 24"):
        write_wav(x, 16000, bits=24)
    with pytest.raises(ValueError, match=r"sample_rate must be .*, got 0"):
        write_wav(x, 0)
    with pytest.raises(ValueError, match=r"sample_rate must be .*, got -5"):
        write_wav(x, -5)
    with pytest.raises(ValueError, match="got dtype int16"):
        write_wav(np.zeros(4, np.int16), 16000)
    with pytest.raises(ValueError, match=r"got shape \[2, 2, 1\]"):
        write_wav(np.zeros((2, 2, 1), np.float32), 16000)
    with pytest.raises(ValueError, match=r"channels must be 1..=65535, got 0"):
        write_wav(np.zeros((4, 0), np.float32), 16000)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda c: hnp.arrays(
            np.float32, st.tuples(st.integers(0, 50), st.just(c)), elements=st.floats(width=32)
        )
    ),
    st.integers(1, 384000),
)
def test_round_trip_property(x, rate):
    if np.isfinite(x).all():
        y, sr = read_wav(write_wav(x, rate, bits=32))
        assert sr == rate
        np.testing.assert_array_equal(y, x)
    else:  # a NaN or an infinity is written unchanged, and refused on reading
        with pytest.raises(ValueError, match="float WAV samples must be finite"):
            read_wav(write_wav(x, rate, bits=32))
    y16, sr16 = read_wav(write_wav(x, rate))
    assert sr16 == rate
    want = np.frombuffer(float_to_pcm16(x.reshape(-1)), "<i2").reshape(x.shape) / 32768
    np.testing.assert_array_equal(y16, want.astype(np.float32))
    finite = np.clip(np.nan_to_num(x, nan=0.0), -1, 32767 / 32768)
    assert np.all(np.abs(y16 - finite) <= 0.5 / 32768 + 1e-9)


# --- chunk layout --------------------------------------------------------------------


def fmt_body(tag=1, channels=1, rate=16000, bits=16, align=None, extra=b""):
    align = channels * bits // 8 if align is None else align
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits) + extra


def ext_fmt(sub: int, channels=2, rate=48000, bits=24, valid=None):
    valid = bits if valid is None else valid
    guid = struct.pack("<H", sub) + GUID_TAIL
    return fmt_body(0xFFFE, channels, rate, bits, extra=struct.pack("<HHI", 22, valid, 3) + guid)


def riff(*chunk_list, riff_size=None) -> bytes:
    """RIFF/WAVE from (id, body) or (id, body, declared size); odd bodies get a pad byte."""
    body = b"WAVE"
    for c in chunk_list:
        cid, data = c[0], c[1]
        size = c[2] if len(c) > 2 else len(data)
        body += cid + struct.pack("<I", size) + data + (b"\0" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


PCM = np.array([0, 16384, -16384, 32767, -32768, 1], "<i2")
PCM_F = PCM.astype(np.float32) / 32768


def test_extra_and_odd_chunks_are_skipped():
    b = riff(
        (b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00"),  # odd-sized body, padded
        (b"fmt ", fmt_body()),
        (b"fact", struct.pack("<I", 6)),
        (b"junk", b"\x01\x02\x03"),
        (b"data", PCM.tobytes()),
        (b"LIST", b"trailing after data"),
    )
    x, sr = read_wav(b)
    assert sr == 16000
    np.testing.assert_array_equal(x[:, 0], PCM_F)


def test_data_chunk_before_fmt():
    b = riff((b"data", PCM.tobytes()), (b"cue ", b"\0" * 5), (b"fmt ", fmt_body(channels=2)))
    x, _ = read_wav(b)
    np.testing.assert_array_equal(x, PCM_F.reshape(-1, 2))


def test_odd_sized_data_chunk_with_pad_byte():
    b = riff((b"fmt ", fmt_body(bits=8)), (b"data", bytes([0, 128, 255])), (b"LIST", b"ab"))
    x, _ = read_wav(b)
    np.testing.assert_array_equal(x[:, 0], [-1.0, 0.0, 127 / 128])


def test_fmt_with_cbsize_and_extensible_valid_bits():
    # WAVEFORMATEX (18-byte fmt, cbSize 0) and EXTENSIBLE 20 valid bits in a 24-bit container
    b = riff((b"fmt ", fmt_body(extra=b"\0\0")), (b"data", PCM.tobytes()))
    np.testing.assert_array_equal(read_wav(b)[0][:, 0], PCM_F)
    raw = bytes([0x00, 0x00, 0x80, 0xF0, 0xFF, 0x7F])  # -1.0, then 0x7FFFF0 (low 4 bits unused)
    b = riff((b"fmt ", ext_fmt(1, channels=1, bits=24, valid=20)), (b"data", raw))
    np.testing.assert_array_equal(read_wav(b)[0][:, 0], [-1.0, 0x7FFFF0 / 2**23])
    f = np.array([0.1, -0.7], "<f4")
    b = riff((b"fmt ", ext_fmt(3, channels=1, bits=32)), (b"data", f.tobytes()))
    np.testing.assert_array_equal(read_wav(b)[0][:, 0], f)


def echokit_record_header(rate=16000) -> bytes:
    """The never-patched header echokit_server's record mode writes (we patch ours:
    docs/compatibility.md#record-mode-and-downloads)."""
    return (
        b"RIFF"
        + struct.pack("<I", 0x7FFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def test_streaming_sentinel_reads_to_end():
    b = echokit_record_header() + PCM.tobytes()
    x, sr = read_wav(b)
    assert sr == 16000
    np.testing.assert_array_equal(x[:, 0], PCM_F)
    # a trailing partial frame (writer cut mid-sample) is dropped
    x, _ = read_wav(b + b"\x7f")
    np.testing.assert_array_equal(x[:, 0], PCM_F)
    # 0x7FFFFFFF as the data size is a sentinel too; empty body -> 0 frames
    b2 = riff((b"fmt ", fmt_body(channels=2)), (b"data", PCM.tobytes()[:10], 0x7FFFFFFF))
    x, _ = read_wav(b2)  # 10 bytes: two 4-byte frames, 2 bytes dropped
    assert x.shape == (2, 2)
    np.testing.assert_array_equal(x.reshape(-1), PCM_F[:4])
    x, _ = read_wav(echokit_record_header())
    assert x.shape == (0, 1)


def test_bytes_like_inputs():
    b = riff((b"fmt ", fmt_body()), (b"data", PCM.tobytes()))
    for data in (bytearray(b), memoryview(b), memoryview(b"zz" + b)[2:]):
        np.testing.assert_array_equal(read_wav(data)[0][:, 0], PCM_F)
    with pytest.raises(ValueError, match="got str"):
        read_wav("RIFF")  # type: ignore[arg-type]


# --- malformed headers -----------------------------------------------------------------

DATA = (b"data", PCM.tobytes())

MALFORMED = [
    ("empty", b"", r"0 bytes is too short for the 12-byte RIFF header"),
    ("not RIFF", b"OggS" + b"\0" * 40, r"expected 'RIFF' at offset 0, found 'OggS'"),
    ("RIFX", b"RIFX\0\0\0\0WAVE", r"big-endian RIFX"),
    ("not WAVE", b"RIFF\x04\0\0\0AVI ", r"RIFF form type is 'AVI ', expected 'WAVE'"),
    ("no fmt", riff(DATA), r"^no fmt chunk found$"),
    ("no data", riff((b"fmt ", fmt_body())), r"^no data chunk found$"),
    ("fmt short", riff((b"fmt ", fmt_body()[:14]), DATA), r"fmt chunk is 14 bytes; at least 16"),
    (
        "extensible short",
        riff((b"fmt ", ext_fmt(1)[:30]), DATA),
        r"WAVE_FORMAT_EXTENSIBLE fmt chunk is 30 bytes; at least 40",
    ),
    ("mu-law", riff((b"fmt ", fmt_body(tag=7, bits=8)), DATA), r"0x0007 \(mu-law\)"),
    ("adpcm", riff((b"fmt ", fmt_body(tag=2, bits=4, align=256)), DATA), r"0x0002 \(MS ADPCM\)"),
    (
        "extensible mu-law",
        riff((b"fmt ", ext_fmt(7, bits=8)), DATA),
        r"sub-format GUID 0700000000001000800000aa00389b71 \(format 0x0007, mu-law\)",
    ),
    (
        "extensible valid bits",
        riff((b"fmt ", ext_fmt(1, bits=16, valid=24)), DATA),
        r"valid bits per sample \(24\) exceed the container's 16 bits",
    ),
    ("channels 0", riff((b"fmt ", fmt_body(channels=0, align=2)), DATA), r"says 0 channels"),
    ("rate 0", riff((b"fmt ", fmt_body(rate=0)), DATA), r"says sample rate 0"),
    ("pcm 12 bits", riff((b"fmt ", fmt_body(bits=12, align=2)), DATA), r"PCM with 12 bits"),
    ("float 16 bits", riff((b"fmt ", fmt_body(tag=3, bits=16)), DATA), r"IEEE float with 16 bits"),
    (
        "block_align",
        riff((b"fmt ", fmt_body(channels=2, align=2)), DATA),
        r"block_align is 2 but 2 channel\(s\) of 16 bits need 4",
    ),
    (
        "data overruns",
        riff((b"fmt ", fmt_body()), (b"data", b"\0" * 1200, 32000)),
        r"^data chunk says 32000 bytes but only 1200 remain$",
    ),
    (
        "data not whole frames",
        riff((b"fmt ", fmt_body(channels=2)), (b"data", b"\0" * 6)),
        r"data chunk size 6 is not a multiple of block_align 4",
    ),
    (
        "other chunk overruns",
        riff((b"LIST", b"\0" * 4, 5000), (b"fmt ", fmt_body()), DATA),
        r"'LIST' chunk at offset 12 says 5000 bytes but only \d+ remain",
    ),
]


@pytest.mark.parametrize(("name", "data", "msg"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed(name, data, msg):
    with pytest.raises(ValueError, match=msg):
        read_wav(data)


def test_truncated_file_is_an_error_at_every_cut():
    b = write_wav(np.linspace(-1, 1, 50, dtype=np.float32), 16000)
    for cut in range(len(b)):
        with pytest.raises(ValueError):
            read_wav(b[:cut])


# --- header writing, sniffing, header info (one implementation: native wav.rs) -------------


def _pcm16_header(riff: int, data: int, rate: int = 16000, channels: int = 1) -> bytes:
    """The canonical header, spelled out field by field (what the Python copies wrote)."""
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def test_wav_header_streaming_and_sized():
    assert wav_header(24000) == _pcm16_header(0xFFFFFFFF, 0xFFFFFFFF, 24000)  # OpenAI stream
    assert wav_header(16000, riff_size=0x7FFFFFFF) == _pcm16_header(0x7FFFFFFF, 0xFFFFFFFF)
    assert wav_header(16000, data_size=3200) == _pcm16_header(3236, 3200)
    assert wav_header(8000, channels=2, data_size=8) == _pcm16_header(44, 8, 8000, 2)
    x = np.linspace(-1, 1, 10, dtype=np.float32)
    assert write_wav(x, 16000)[:44] == wav_header(16000, data_size=20)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 0},
        {"sample_rate": 16000, "channels": 0},
        {"sample_rate": 16000, "data_size": -1},
        {"sample_rate": 16000, "data_size": 3},  # not whole 16-bit frames
        {"sample_rate": 16000, "data_size": 0xFFFFFFFE},  # no room for the RIFF size
        {"sample_rate": 16000, "riff_size": 1 << 32},
    ],
)
def test_wav_header_bad_values_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        wav_header(**kwargs)


def test_is_wav_and_wav_info():
    data = write_wav(np.zeros((5, 2), np.float32), 22050)
    assert is_wav(data) and is_wav(bytearray(data)) and is_wav(memoryview(data))
    assert not is_wav(b"RIFF\0\0\0\0AVI ") and not is_wav(b"RIFF") and not is_wav(b"")
    info = wav_info(data)
    assert (info.format_tag, info.bits, info.channels, info.sample_rate) == (1, 16, 2, 22050)
    assert (info.frames, info.data_offset, info.streaming) == (5, 44, False)
    f32 = wav_info(write_wav(np.zeros(3, np.float32), 8000, bits=32))
    assert (f32.format_tag, f32.bits, f32.frames, f32.data_offset) == (3, 32, 3, 58)
    streaming = wav_info(wav_header(16000) + bytes(7))
    assert streaming.streaming and streaming.frames == 3
    with pytest.raises(ValueError, match="expected 'RIFF'"):
        wav_info(b"OggS" + bytes(40))
    with pytest.raises(ValueError) as exc:
        wav_info(data[:50])  # the same message as read_wav
    with pytest.raises(ValueError) as exc_read:
        read_wav(data[:50])
    assert str(exc.value) == str(exc_read.value)
    with pytest.raises(ValueError, match="bytes"):
        wav_info("RIFF")  # type: ignore[arg-type]

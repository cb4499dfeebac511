"""Audio kernels: PCM conversion, channel mixing, resampling, WAV, Opus, lip-sync vowels.

Thin wrappers over `echokit_fast._native` (Rust, GIL released); this module is the
public API, callers never import `_native` directly.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from echokit_fast import _native

__all__: list[str] = []

# --- PCM conversion and channel mixing (pcm) ---

__all__ += ["float_to_pcm16", "pcm16_to_float", "to_mono"]


def _as_u8(data: bytearray | memoryview) -> np.ndarray:
    """A zero-copy uint8 view of a bytes-like object (for the native byte readers)."""
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise ValueError("bytes-like input must be contiguous")
    return np.frombuffer(mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv, np.uint8)


def _is_float(x: np.ndarray) -> bool:
    """float32 or float64, either byte order (converted to native float32 by the callers)."""
    return x.dtype.kind == "f" and x.dtype.itemsize in (4, 8)


def _f32_1d(x: np.ndarray, name: str) -> np.ndarray:
    """`x` as a C-contiguous 1-D float32 array (float64 converted), else ValueError."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} expects a 1-D float32 array, got {type(x).__name__}")
    if not _is_float(x):
        raise ValueError(f"{name} expects a 1-D float32 array, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.ndim != 1:
        raise ValueError(f"{name} expects a 1-D float32 array, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def pcm16_to_float(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Signed 16-bit PCM to float32, ``value / 32768`` (so -32768 -> -1.0).

    ``data`` is either little-endian s16 bytes (``bytes``, ``bytearray`` or a
    ``memoryview``; read in place, an odd byte count is a ValueError) or a 1-D
    int16 array (any byte order, any stride). Returns a new float32 array.
    """
    if isinstance(data, bytes):
        return _native.pcm16_to_float(data)
    if isinstance(data, (bytearray, memoryview)):
        return _native.pcm16_to_float(_as_u8(data))
    if isinstance(data, np.ndarray):
        if data.dtype.kind != "i" or data.dtype.itemsize != 2:
            raise ValueError(f"pcm16_to_float expects an int16 array, got dtype {data.dtype}")
        if data.ndim != 1:
            raise ValueError(f"pcm16_to_float expects a 1-D int16 array, got shape {data.shape}")
        return _native.pcm16_to_float(np.ascontiguousarray(data, dtype=np.int16))
    raise ValueError(
        f"pcm16_to_float expects bytes (s16le) or an int16 array, got {type(data).__name__}"
    )


def float_to_pcm16(x: np.ndarray) -> bytes:
    """Float samples to little-endian signed 16-bit PCM bytes.

    Each sample becomes ``x * 32768`` rounded half to even (the rule of
    ``numpy.round``: 0.5 LSB -> 0, 1.5 LSB -> 2), saturated to [-32768, 32767]
    (so 1.0 -> 32767, -1.0 -> -32768, ±inf saturate); NaN becomes 0. ``x`` is a
    1-D float32 array (float64 is converted to float32 first).
    """
    return _native.float_to_pcm16(_f32_1d(x, "float_to_pcm16"))


def to_mono(x: np.ndarray, channels: int) -> np.ndarray:
    """Average the channels of interleaved audio: one float32 sample per frame.

    ``x`` is float32 or int16 (int16 is scaled by 1/32768; float64 is converted
    to float32), either 1-D interleaved (``len(x)`` must be a multiple of
    ``channels``) or 2-D ``(frames, channels)`` (then ``channels`` must equal
    ``x.shape[1]``). ``channels == 1`` returns a float32 copy.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"to_mono expects a float32 or int16 array, got {type(x).__name__}")
    if _is_float(x):
        x = x.astype(np.float32, copy=False)
    elif x.dtype.kind == "i" and x.dtype.itemsize == 2:
        x = x.astype(np.int16, copy=False)
    else:
        raise ValueError(f"to_mono expects a float32 or int16 array, got dtype {x.dtype}")
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    return _native.to_mono(x, channels)


# --- WAV (wav) ---

__all__ += ["WavInfo", "is_wav", "read_wav", "wav_header", "wav_info", "write_wav"]

#: What a WAV header says: ``format_tag`` (1 PCM, 3 IEEE float; an EXTENSIBLE file's
#: sub-format), ``bits`` (per sample), ``channels``, ``sample_rate``, ``frames``,
#: ``data_offset``, ``streaming`` (a streaming sentinel data size: read to the end), and
#: ``duration`` (seconds).
WavInfo = _native.WavInfo

#: ``wav_header(sample_rate, channels=1, data_size=None, riff_size=None) -> bytes``: the
#: canonical 44-byte 16-bit PCM header. ``data_size`` None is a streaming header (0xFFFFFFFF);
#: ``riff_size`` defaults to ``36 + data_size`` (0xFFFFFFFF when streaming). Bad values are a
#: ValueError.
wav_header = _native.wav_header


def _wav_bytes(data: bytes | bytearray | memoryview, name: str) -> bytes | np.ndarray:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return _as_u8(data)
    raise ValueError(f"{name} expects the WAV file as bytes, got {type(data).__name__}")


def is_wav(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts like a WAV file (``RIFF`` .. ``WAVE``); the rest is not checked."""
    return _native.is_wav(_wav_bytes(data, "is_wav"))


def wav_info(data: bytes | bytearray | memoryview) -> WavInfo:
    """The header of an in-memory WAV file, validated like :func:`read_wav` (same errors, a
    ValueError), without decoding the samples."""
    return _native.wav_info(_wav_bytes(data, "wav_info"))


def read_wav(data: bytes | bytearray | memoryview) -> tuple[np.ndarray, int]:
    """Decode an in-memory WAV file to ``(samples, sample_rate)``.

    ``samples`` is float32 shaped ``(frames, channels)``. Reads PCM 8-bit
    (unsigned, ``(b - 128) / 128``), 16/24/32-bit (``value / 2**(bits-1)``), IEEE
    float 32/64-bit and WAVE_FORMAT_EXTENSIBLE with a PCM or float sub-format.
    Unknown chunks (LIST, fact, ...) are skipped, odd-sized chunks are padded, and
    ``data`` may precede ``fmt ``. A data size of 0xFFFFFFFF or 0x7FFFFFFF (the
    never-patched header of streaming writers such as EchoKit record mode) means
    "read to the end", and a truncated trailing partial frame is then dropped; any
    other data size that overruns the file, or that is not a whole number of
    frames, is a ValueError, as is every malformed or unsupported header (the
    message names what is wrong) and a float sample that is NaN or infinite
    (the message names the first one).
    """
    return _native.read_wav(_wav_bytes(data, "read_wav"))


def write_wav(x: np.ndarray, sample_rate: int, *, bits: int = 16) -> bytes:
    """Encode float samples as a WAV file.

    ``x`` is float32 (float64 is converted), 1-D mono or ``(frames, channels)``.
    ``bits=16`` (default) writes 16-bit PCM with the canonical 44-byte header
    (samples converted as in :func:`float_to_pcm16`: rounded half to even,
    saturated, NaN -> 0). ``bits=32`` writes 32-bit IEEE float samples unchanged
    (format 3, 18-byte ``fmt `` plus a ``fact`` chunk: a 58-byte header).
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"write_wav expects a float32 array, got {type(x).__name__}")
    if not _is_float(x):
        raise ValueError(f"write_wav expects a float32 array, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    return _native.write_wav(np.ascontiguousarray(x), sample_rate, bits)


# --- Resampling (resample) ---


__all__ += ["RESAMPLE_MAX_RATE", "RESAMPLE_MIN_RATE", "Resampler", "resample"]

RESAMPLE_MIN_RATE = 8000
RESAMPLE_MAX_RATE = 48000


class Resampler(_native.Resampler):
    """Streaming mono resampler between two rates in 8000..48000 Hz.

    A polyphase windowed-sinc (Kaiser) FIR: passband flat within 0.1 dB up to
    0.9 x the lower Nyquist frequency, >= 80 dB stopband above it (images and
    aliases). ``Resampler(from_rate, to_rate)``; rates must be integers in
    range, else ``ValueError`` naming the value.

    - ``process(chunk) -> np.ndarray[float32]``: feed any number of samples (0 and
      1 included) of a 1-D float32 array (float64 and int16, scaled by 1/32768,
      are converted); returns the output samples the chunk completes. 2-D
      input is rejected (mono only; mix down with ``to_mono`` first).
    - ``flush() -> np.ndarray[float32]``: ends the stream, returning the outputs
      still held back (the input is continued with silence), then resets.
    - ``reset()``: drops the stream's state without output.
    - ``delay``: latency in output samples. Output sample ``n`` is the input at
      time ``n * from_rate / to_rate`` (the stream is aligned with its input, no
      leading delay); an output is emitted once all input its filter needs has
      arrived, so after ``n_in`` input samples a stream has emitted
      ``round(n_in * to_rate / from_rate) - d`` samples with ``d`` equal to
      ``delay`` or ``delay - 1`` (never more than ``delay``).
    - ``from_rate`` / ``to_rate``.

    Contract: the concatenation of all ``process`` outputs and the final
    ``flush`` equals ``resample(whole_input, from_rate, to_rate)`` sample for
    sample (same float32 values, whatever the chunking) and has
    ``round(n_in * to_rate / from_rate)`` samples (halves rounded up). Equal
    rates pass samples through with ``delay == 0``.

    The GIL is released while processing; calls on one object from several
    threads are serialised (each stream is still one sequence of chunks).
    """

    __slots__ = ()


def resample(x: npt.ArrayLike, from_rate: int, to_rate: int) -> npt.NDArray[np.float32]:
    """Resample mono audio ``x`` from ``from_rate`` to ``to_rate`` Hz in one go.

    ``x``: 1-D float32 (float64 and int16 -- scaled by 1/32768 -- are converted;
    other array-likes go through ``np.asarray``). The result is aligned with
    the input (no delay to trim), ``round(len(x) * to_rate / from_rate)``
    samples long, and equal to what a :class:`Resampler` stream produces for
    the same input. Equal rates return a float32 copy. Quality as for
    :class:`Resampler`. Raises ``ValueError`` for rates outside 8000..48000 or
    not integers, for 2-D input (mono only) and for other dtypes.
    """
    if not isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=np.float32)
    return _native.resample(x, from_rate, to_rate)


# --- Opus (opus) ---

OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_FRAME_MS = (2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0)
OPUS_MAX_PACKET = 1280


#: libopus' complexity of the downlink encoders (the EchoKit and xiaozhi replies): the lowest
#: whose WER is that of libopus' default (9) and whose spectral distance is within 0.2 dB of
#: it on both links, as measured by benches/bench_opus_complexity.py (which fails past 0.25 dB:
#: the margin is for libopus' other SIMD code paths on other CPUs); it encodes in about half
#: the default's time
DOWNLINK_OPUS_COMPLEXITY = 4


class OpusEncoder:
    """Streaming Opus encoder as EchoKit uses it (docs/protocol.md#opus).

    Mono, application VOIP, every other setting at libopus defaults (auto
    bitrate, VBR), packets of at most 1280 bytes, one packet per frame of
    ``frame_ms`` (120 ms = 1920 samples at 16 kHz by default).

    ``push`` buffers samples across calls and encodes every whole frame;
    ``flush`` zero-pads a non-empty remainder to one frame and encodes it, so
    the decoded length is the input length rounded up to whole frames (the
    reference server drops that tail; we do not).

    Input is a 1-D numpy array of float32 or int16. Floats are converted to
    int16 as the inverse of :func:`pcm16_to_float`: ``x * 32768`` rounded
    half to even (like ``np.round``), saturated, NaN -> 0. So PCM16 that went
    through ``pcm16_to_float`` reaches libopus bit-exact, as in the
    reference. Encoding runs without the GIL.
    """

    __slots__ = ("_enc",)

    def __init__(
        self, sample_rate: int = 16000, frame_ms: float = 120, complexity: int | None = None
    ) -> None:
        """``sample_rate`` in :data:`OPUS_SAMPLE_RATES`, ``frame_ms`` in
        :data:`OPUS_FRAME_MS`, ``complexity`` 0 to 10 (None: libopus' default, 9); anything
        else raises ValueError."""
        self._enc = _native.OpusEncoder(sample_rate, frame_ms, complexity)

    @property
    def sample_rate(self) -> int:
        return self._enc.sample_rate

    @property
    def complexity(self) -> int:
        """libopus' encoder complexity (0 fastest ... 10 best)."""
        return self._enc.complexity

    @property
    def frame_size(self) -> int:
        """Samples per frame (1920 at 16 kHz / 120 ms)."""
        return self._enc.frame_size

    @property
    def pending(self) -> int:
        """Samples buffered, waiting for a whole frame."""
        return self._enc.pending

    def push(self, pcm: npt.NDArray[np.float32] | npt.NDArray[np.int16]) -> list[bytes]:
        """Append samples; return one packet per frame completed."""
        return self._enc.push(pcm)

    def push_with_vowels(
        self, pcm: npt.NDArray[np.float32] | npt.NDArray[np.int16]
    ) -> list[tuple[bytes, int]]:
        """Like :meth:`push`, each packet paired with its lip-sync vowel code
        (see :func:`vowel_of`; computed on the frame's int16 samples, as the
        reference does for ``AudioChunkWithVowel``)."""
        return self._enc.push_with_vowels(pcm)

    def flush(self) -> list[bytes]:
        """Encode the remainder zero-padded to one frame ([] if none)."""
        return self._enc.flush()

    def flush_with_vowels(self) -> list[tuple[bytes, int]]:
        """:meth:`flush` with the vowel code of the padded frame."""
        return self._enc.flush_with_vowels()

    def reset(self) -> None:
        """Reset the codec state (as on ``StartAudio``) and drop buffered samples."""
        self._enc.reset()


class OpusDecoder:
    """Mono Opus decoder; packets of more than 120 ms are refused (the device
    decodes at most 1920 samples per packet). Output is float32, libopus'
    int16 output divided by 32768. Decoding runs without the GIL."""

    __slots__ = ("_dec",)

    def __init__(self, sample_rate: int = 16000) -> None:
        self._dec = _native.OpusDecoder(sample_rate)

    @property
    def sample_rate(self) -> int:
        return self._dec.sample_rate

    def decode(self, packet: bytes | bytearray) -> npt.NDArray[np.float32]:
        """Decode one packet. Empty, corrupt or over-long packets raise
        ValueError; the decoder stays usable."""
        return self._dec.decode(packet)

    def reset(self) -> None:
        """Reset the decoder state."""
        self._dec.reset()


__all__ += [
    "DOWNLINK_OPUS_COMPLEXITY",
    "OPUS_FRAME_MS",
    "OPUS_MAX_PACKET",
    "OPUS_SAMPLE_RATES",
    "OpusDecoder",
    "OpusEncoder",
]

# --- Lip-sync vowels (vowel) ---

VOWEL_NONE, VOWEL_A, VOWEL_E, VOWEL_I, VOWEL_O, VOWEL_U = range(6)
VOWEL_NAMES = ("", "A", "E", "I", "O", "U")
"""Name of each EchoKit vowel code (index = code)."""


def vowel_of(
    frame: npt.NDArray[np.float32] | npt.NDArray[np.int16], sample_rate: int = 16000
) -> int:
    """Lip-sync vowel code of one audio frame: 0 none, 1 A, 2 E, 3 I, 4 O, 5 U.

    Identical to echokit_server's ``AudioChunkWithVowel`` vowel (docs/protocol.md#vowels,
    the ``lip_sync`` crate's LPC/formant classifier): only the first 1024
    samples of ``frame`` are analysed (pass the whole 1920-sample frame, as
    the server does). int16 samples are scaled by 1/32767 first, as the
    reference does; float32 samples are analysed as given (for bit-exact
    reference results from float PCM, quantise to int16 first, as
    :meth:`OpusEncoder.push_with_vowels` does). Silence, frames of at most
    ``sample_rate // 1000 + 4`` samples and unclassified formants give 0.
    """
    return _native.vowel_of(frame, sample_rate)


__all__ += [
    "VOWEL_A",
    "VOWEL_E",
    "VOWEL_I",
    "VOWEL_NAMES",
    "VOWEL_NONE",
    "VOWEL_O",
    "VOWEL_U",
    "vowel_of",
]

# --- Decoding audio files, bounded (WAV natively, other containers through PyAV) ---

#: Sample rates :func:`decode_file` accepts; a header outside them is refused before any
#: sample is decoded (a "1 Hz" WAV of 1 KB would otherwise be 10 minutes at 16 kHz).
DECODE_MIN_RATE = 1000
DECODE_MAX_RATE = 384000
#: The rate containers decoded by PyAV come out at (Whisper's).
DECODE_RATE = 16000
_RESAMPLE_BATCH = 500_000  # input samples per PyAV resampler call


class AudioTooLong(ValueError):
    """The audio lasts longer than the caller's limit.

    ``seconds`` is how long it is when the header says so; None when decoding was stopped
    at the limit (the file is at least ``limit`` seconds long)."""

    def __init__(self, seconds: float | None, limit: float) -> None:
        self.seconds = seconds
        self.limit = limit
        length = f"{seconds:.1f} s" if seconds is not None else f"more than {limit:g} s"
        super().__init__(f"the audio lasts {length}, over the limit of {limit:g} s")


class AudioRateError(ValueError):
    """The file's sample rate is outside ``DECODE_MIN_RATE..DECODE_MAX_RATE``."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        super().__init__(
            f"sample rate {rate} Hz is not supported "
            f"(expected {DECODE_MIN_RATE}..{DECODE_MAX_RATE} Hz)"
        )


def _check_rate(rate: int) -> None:
    if not DECODE_MIN_RATE <= rate <= DECODE_MAX_RATE:
        raise AudioRateError(rate)


def decode_file(
    data: bytes, *, max_seconds: float | None = None
) -> tuple[npt.NDArray[np.float32], int]:
    """Mono float32 samples and their rate from an audio file in memory.

    A WAV file (anything :func:`read_wav` reads) is decoded natively at its own rate when
    the resampler takes it (``RESAMPLE_MIN_RATE..RESAMPLE_MAX_RATE``); other rates and
    other containers (mp3, ogg, flac, webm ...) go through PyAV (the ``asr`` extra) and
    come out at ``DECODE_RATE``. The channels are averaged.

    Bounded before the work: a rate outside ``DECODE_MIN_RATE..DECODE_MAX_RATE`` raises
    :class:`AudioRateError`; with ``max_seconds``, audio longer than that raises
    :class:`AudioTooLong`, decided from the WAV header, else from the duration the
    container declares, else (and also when the declaration is wrong) by counting the
    decoded samples, stopping at the limit. Any other unusable file is a ValueError.
    """
    if not data:
        raise ValueError("the audio file is empty")
    if is_wav(data):
        info = wav_info(data)
        _check_rate(info.sample_rate)
        if max_seconds is not None and info.duration > max_seconds:
            raise AudioTooLong(info.duration, max_seconds)
        if RESAMPLE_MIN_RATE <= info.sample_rate <= RESAMPLE_MAX_RATE:
            samples, rate = read_wav(data)
            return to_mono(samples, samples.shape[1]), rate
        # A rate the native resampler does not take: PyAV resamples it below.
    try:
        import av
    except ImportError as exc:  # an optional dependency (the asr extra)
        raise ValueError(
            f"only WAV files can be decoded here: other formats need PyAV ({exc})"
        ) from exc
    try:
        return _decode_with_av(av, data, max_seconds), DECODE_RATE
    except (AudioTooLong, AudioRateError):
        raise
    except Exception as exc:  # PyAV's errors for data it cannot read (FFmpeg's errno inside)
        raise ValueError(f"could not decode the audio: {guess_format(data)}") from exc
    finally:
        # PyAV's resampler holds FFmpeg memory until the collector frees it (faster-whisper
        # does the same: SYSTRAN/faster-whisper#390).
        gc.collect()


#: what a file that is not audio often is, by its first bytes
_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x7fELF", "a program"),
    (b"RIFF", "a RIFF file that is not a WAV with audio this server reads"),
)


def guess_format(data: bytes) -> str:
    """What `data`, which no audio decoder reads, seems to be (for an error message)."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return f"the file looks like {name}, not audio"
    head = data[:512].decode("utf-8", "replace")[:-1]  # (the cut may split a character)
    if head and "\ufffd" not in head and all(c.isprintable() or c.isspace() for c in head):
        return "the file looks like text, not audio"
    return (
        f"the data is in no audio format FFmpeg reads (it starts with {data[:8].hex(' ')}); "
        "send WAV, MP3, Ogg, FLAC, WebM or M4A"
    )


def _declared_seconds(av: Any, container: Any, stream: Any) -> float | None:
    """How long the container says the stream is (None when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _frames(av: Any, container: Any, stream: Any) -> Iterator[Any]:
    """The stream's decoded frames: a packet that does not decode is skipped, and the
    stream ends where the container's data is damaged (what was read so far is kept)."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.error.InvalidDataError):
            return
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


def _decode_with_av(av: Any, data: bytes, max_seconds: float | None) -> np.ndarray:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=DECODE_RATE)
    fifo = av.AudioFifo()  # frames are resampled in batches: much faster than one by one
    chunks: list[np.ndarray] = []

    def resample(batch: Any) -> None:
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(batch))

    seconds = 0.0
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise ValueError("the file has no audio stream")
        stream = container.streams.audio[0]
        _check_rate(stream.codec_context.sample_rate)
        declared = _declared_seconds(av, container, stream)
        if max_seconds is not None and declared is not None and declared > max_seconds:
            raise AudioTooLong(declared, max_seconds)
        for frame in _frames(av, container, stream):
            _check_rate(frame.sample_rate)
            seconds += frame.samples / frame.sample_rate
            if max_seconds is not None and seconds > max_seconds:
                raise AudioTooLong(None, max_seconds)
            frame.pts = None  # the FIFO would insist on contiguous timestamps
            fifo.write(frame)
            if fifo.samples >= _RESAMPLE_BATCH:
                resample(fifo.read())
        if fifo.samples:
            resample(fifo.read())
        resample(None)  # the resampler's tail
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return pcm.astype(np.float32) / 32768.0


__all__ += [
    "DECODE_MAX_RATE",
    "DECODE_MIN_RATE",
    "DECODE_RATE",
    "AudioRateError",
    "AudioTooLong",
    "decode_file",
    "guess_format",
]

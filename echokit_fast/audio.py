"""Audio kernels: PCM conversion, channel mixing, resampling, WAV, Opus, lip-sync vowels.

Thin wrappers over `echokit_fast._native` (Rust, GIL released); this module is the
public API, callers never import `_native` directly.
"""

from __future__ import annotations

from echokit_fast import _native

__all__: list[str] = []

# --- PCM conversion and channel mixing (pcm) ---

# --- WAV (wav) ---

# --- Resampling (resample) ---

# --- Opus (opus) ---

import numpy as np
import numpy.typing as npt

OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_FRAME_MS = (2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0)
OPUS_MAX_PACKET = 1280


class OpusEncoder:
    """Streaming Opus encoder as EchoKit uses it (spec §4.3).

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

    def __init__(self, sample_rate: int = 16000, frame_ms: float = 120) -> None:
        """``sample_rate`` in :data:`OPUS_SAMPLE_RATES`, ``frame_ms`` in
        :data:`OPUS_FRAME_MS`; anything else raises ValueError."""
        self._enc = _native.OpusEncoder(sample_rate, frame_ms)

    @property
    def sample_rate(self) -> int:
        return self._enc.sample_rate

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


__all__ += ["OPUS_FRAME_MS", "OPUS_MAX_PACKET", "OPUS_SAMPLE_RATES", "OpusDecoder", "OpusEncoder"]

# --- Lip-sync vowels (vowel) ---

VOWEL_NONE, VOWEL_A, VOWEL_E, VOWEL_I, VOWEL_O, VOWEL_U = range(6)
VOWEL_NAMES = ("", "A", "E", "I", "O", "U")
"""Name of each EchoKit vowel code (index = code)."""


def vowel_of(
    frame: npt.NDArray[np.float32] | npt.NDArray[np.int16], sample_rate: int = 16000
) -> int:
    """Lip-sync vowel code of one audio frame: 0 none, 1 A, 2 E, 3 I, 4 O, 5 U.

    Identical to echokit_server's ``AudioChunkWithVowel`` vowel (spec §4.4,
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

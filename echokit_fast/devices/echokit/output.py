"""Server -> device audio: the frames of one spoken segment (docs/protocol.md#audio-out) and the
hello (docs/protocol.md#hello).

Every binary frame is built by :mod:`echokit_fast.devices.echokit.protocol` (``encode_event`` /
``encode_audio_chunk``), byte-identical to the reference server's. The text of a ``StartAudio``,
``ASR``, ``DisplayText`` or ``Action`` event, and the message and each item of a ``Choices``, is
at most ``max_bytes`` UTF-8 bytes (the connection's ``[limits] max_text_bytes``), cut at a word
boundary when longer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from echokit_fast.audio import (
    DOWNLINK_OPUS_COMPLEXITY,
    OpusEncoder,
    float_to_pcm16,
    is_wav,
    wav_info,
)
from echokit_fast.conversation.splitter import cut_text
from echokit_fast.devices.echokit.protocol import encode_audio_chunk, encode_event

__all__ = [
    "BYE_BYE",
    "END_AUDIO",
    "END_RESPONSE",
    "END_VAD",
    "HELLO_CHUNK",
    "RAW_CHUNK_MAX",
    "AudioOut",
    "action",
    "asr",
    "choices",
    "display_text",
    "hello_frames",
    "load_hello",
    "start_audio",
]

log = logging.getLogger("echokit_fast.device")

RAW_CHUNK_MAX = 32000  # bytes of PCM16 per raw AudioChunk (1 s)
HELLO_CHUNK = 2048  # bytes of the hello file per HelloChunk
SAMPLE_RATE = 16000

EV_START_AUDIO = "StartAudio"
END_AUDIO = encode_event("EndAudio")
END_RESPONSE = encode_event("EndResponse")
END_VAD = encode_event("EndVad")
#: a live model's service ended the conversation (the reference's answer to Gemini's goAway)
BYE_BYE = encode_event({"Action": {"action": "ByeBye"}})


def _text_event(kind: str, text: str, max_bytes: int) -> bytes:
    return encode_event({kind: {"text": cut_text(text, max_bytes)}})


def start_audio(text: str, max_bytes: int) -> bytes:
    return _text_event("StartAudio", text, max_bytes)


def asr(text: str, max_bytes: int) -> bytes:
    return _text_event("ASR", text, max_bytes)


def display_text(text: str, max_bytes: int) -> bytes:
    return _text_event("DisplayText", text, max_bytes)


def action(text: str, max_bytes: int) -> bytes:
    return encode_event({"Action": {"action": cut_text(text, max_bytes)}})


def choices(message: str, items: list[str], max_bytes: int) -> bytes:
    cut = [cut_text(item, max_bytes) for item in items]
    return encode_event({"Choices": {"message": cut_text(message, max_bytes), "items": cut}})


class AudioOut:
    """Encodes one spoken segment's TTS audio: raw PCM16 (``opus=False``; ``AudioChunk`` of at
    most 32 000 bytes per piece of each TTS chunk), or Opus (16 kHz, 120 ms packets, one per
    ``AudioChunk``, or ``AudioChunkWithVowel`` with ``vowel=True``). The Opus remainder of
    each TTS chunk is carried to the next and zero-padded to a whole frame at the segment end
    (:meth:`end_segment`), so no audio is lost (the reference drops it,
    docs/compatibility.md#device-audio). One per segment: every segment starts with a fresh encoder,
    as the device resets its decoder on ``StartAudio``.
    """

    __slots__ = ("_enc", "opus", "vowel")

    def __init__(self, *, opus: bool, vowel: bool) -> None:
        self.opus = opus
        # vowel only means something with opus (docs/protocol.md#query-flags)
        self.vowel = opus and vowel
        self._enc = OpusEncoder(SAMPLE_RATE, 120, DOWNLINK_OPUS_COMPLEXITY) if opus else None

    def push(self, pcm: npt.NDArray[np.float32]) -> list[bytes]:
        """Frames for one chunk of float32 16 kHz mono samples."""
        if self._enc is None:
            raw = float_to_pcm16(pcm)
            return [
                encode_audio_chunk(raw[i : i + RAW_CHUNK_MAX])
                for i in range(0, len(raw), RAW_CHUNK_MAX)
            ]
        if self.vowel:
            return [encode_audio_chunk(p, v) for p, v in self._enc.push_with_vowels(pcm)]
        return [encode_audio_chunk(p) for p in self._enc.push(pcm)]

    def end_segment(self) -> list[bytes]:
        """Frames for the zero-padded remainder (Opus), or none."""
        if self._enc is None:
            return []
        if self.vowel:
            return [encode_audio_chunk(p, v) for p, v in self._enc.flush_with_vowels()]
        return [encode_audio_chunk(p) for p in self._enc.flush()]


def load_hello(path: str | Path | None) -> bytes | None:
    """The hello file's bytes, sent verbatim like the reference (the firmware stores them and
    plays them as raw PCM16 16 kHz mono, the 44-byte header included, docs/protocol.md#hello and
    docs/compatibility.md#device-audio).

    The file is checked once here: when it is not a 16 kHz mono 16-bit PCM WAV, a warning
    says what the device will play instead (it is still sent unchanged). Unreadable or empty
    -> None (no hello), with a warning.
    """
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        log.warning("hello_wav %s cannot be read (%s); no hello will be sent", path, exc)
        return None
    if not data:
        log.warning("hello_wav %s is empty; no hello will be sent", path)
        return None
    problem = _hello_problem(data)
    if problem:
        log.warning(
            "hello_wav %s: %s; the device plays the file's bytes as 16 kHz mono PCM16, so it "
            "will sound wrong (sent unchanged, as echokit_server does)",
            path,
            problem,
        )
    return data


def _hello_problem(data: bytes) -> str | None:
    if not is_wav(data):
        return "not a WAV file"
    try:
        info = wav_info(data)
    except ValueError as exc:
        return f"not a readable WAV file ({exc})"
    issues = []
    if info.sample_rate != SAMPLE_RATE:
        issues.append(f"{info.sample_rate} Hz (needs 16000)")
    if info.channels != 1:
        issues.append(f"{info.channels} channels (needs mono)")
    if (info.format_tag, info.bits) != (1, 16):
        issues.append(f"format {info.format_tag}/{info.bits}-bit (needs 16-bit PCM)")
    return ", ".join(issues) or None


def hello_frames(data: bytes) -> list[bytes]:
    """HelloStart, the file in 2048-byte HelloChunks (the last one shorter), HelloEnd."""
    frames = [encode_event("HelloStart")]
    frames += [
        encode_event({"HelloChunk": {"data": data[i : i + HELLO_CHUNK]}})
        for i in range(0, len(data), HELLO_CHUNK)
    ]
    frames.append(encode_event("HelloEnd"))
    return frames

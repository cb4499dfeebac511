"""The audio formats of ``POST /v1/audio/speech``, encoded as the speech is synthesised.

``mp3`` (OpenAI's default), ``opus`` (in Ogg), ``aac`` (ADTS), ``flac`` go through PyAV's
encoders (FFmpeg's libmp3lame, libopus, aac, flac) into a container written to memory and
drained after every chunk, so each synthesised piece leaves as soon as it is encoded; nothing
seeks back (the FLAC header leaves without a total length, which decoders do not need).
``wav`` is a 16-bit header whose sizes say "to the end of the stream" (0xFFFFFFFF, as OpenAI
sends it) then PCM; ``pcm`` is raw s16le. All mono at the engine's rate (24 kHz).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from echokit_fast.audio import float_to_pcm16, wav_header

__all__ = ["FORMATS", "Encoder", "media_type"]


@dataclass(frozen=True)
class _Codec:
    container: str
    codec: str
    media_type: str


_CODECS = {
    "mp3": _Codec("mp3", "libmp3lame", "audio/mpeg"),
    "opus": _Codec("ogg", "libopus", "audio/ogg"),
    "aac": _Codec("adts", "aac", "audio/aac"),
    "flac": _Codec("flac", "flac", "audio/flac"),
}
#: every ``response_format``, OpenAI's order
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def media_type(fmt: str, rate: int) -> str:
    """The Content-Type of audio in `fmt`."""
    if fmt == "pcm":
        return f"audio/pcm;rate={rate}"
    if fmt == "wav":
        return "audio/wav"
    return _CODECS[fmt].media_type


class _Sink:
    """A write-only file for PyAV: what the muxer writes, until drained."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class Encoder:
    """Mono float32 chunks at `rate` in, the bytes of `fmt` (one of FORMATS) out: call
    :meth:`encode` per chunk, then :meth:`finish` once (or :meth:`close` to drop the rest).
    The PyAV work is CPU-bound: callers run it off the event loop, hence the lock (a
    :meth:`close` from the loop waits for an encoding under way in a thread)."""

    def __init__(self, fmt: str, rate: int) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}")
        self.rate = rate
        self._lock = threading.Lock()
        self._header = wav_header(rate) if fmt == "wav" else b""
        self._container: Any = None
        self._stream: Any = None  # None: raw PCM (wav, pcm)
        if fmt in _CODECS:
            import av

            codec = _CODECS[fmt]
            self._sink = _Sink()
            self._container = av.open(self._sink, mode="w", format=codec.container)
            self._stream = self._container.add_stream(codec.codec, rate=rate, layout="mono")

    def _mux(self, frame: Any) -> bytes:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.drain()

    def encode(self, chunk: np.ndarray) -> bytes:
        with self._lock:
            header, self._header = self._header, b""
            if self._stream is None:
                return header + float_to_pcm16(chunk)
            if self._container is None:
                raise ValueError("the encoder is closed")
            import av

            samples = np.ascontiguousarray(chunk, dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = self.rate
            return self._mux(frame)

    def finish(self) -> bytes:
        """The encoder's tail and the container's trailer (the header alone for no audio)."""
        with self._lock:
            header, self._header = self._header, b""
            if self._container is None:
                return header
            tail = self._mux(None)
            self._container.close()
            self._container = None
            return tail + self._sink.drain()

    def close(self) -> None:
        with self._lock:
            if self._container is not None:
                self._container.close()
                self._container = None

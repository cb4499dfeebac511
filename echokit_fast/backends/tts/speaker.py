"""What the HTTP speakers share: one client each, failures as notices, WAV replies decoded,
mixed to mono, resampled to the asked rate with :mod:`echokit_fast.audio` and yielded in
0.5 s chunks.

Timeouts where the reference has none (stream_gsv, openai, groq, fish): connecting 10 s, and
``read_timeout`` (60 s) without any data.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np

from echokit_fast import audio
from echokit_fast.backends import http
from echokit_fast.backends.base import BackendError, Pcm

__all__ = ["NOTICES", "HTTPSpeaker", "tts_error", "wav_to_rate"]

log = logging.getLogger(__name__)

NOTICES = http.Notices(
    "The speech synthesizer", "tts", cut="The speech synthesizer's audio was cut off."
)


def tts_error(
    what: str, exc: BaseException | None = None, status: int | None = None
) -> BackendError:
    """The BackendError for an HTTP ``status`` or a transport exception ``exc``."""
    notice = NOTICES.status(status) if status is not None else NOTICES.exception(exc or Exception())
    return NOTICES.error(what, notice)


def _chunks(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def wav_to_rate(body: bytes, sample_rate: int, source: str) -> np.ndarray:
    """A WAV body as mono float32 at ``sample_rate``; a bad WAV is a BackendError."""
    try:
        samples, rate = audio.read_wav(body)
    except ValueError as exc:
        raise BackendError(
            f"TTS {source}: bad WAV ({len(body)} bytes): {exc}",
            notice="The speech synthesizer sent audio that cannot be played.",
            backend="tts",
        ) from exc
    mono = samples[:, 0] if samples.shape[1] == 1 else audio.to_mono(samples, samples.shape[1])
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != sample_rate:
        mono = audio.resample(mono, rate, sample_rate)
    return mono


class HTTPSpeaker:
    """Common plumbing: one httpx client, status checks, WAV replies in 0.5 s chunks."""

    name = "tts"

    def __init__(self, url: str, *, connect_timeout: float = 10.0, read_timeout: float = 60.0):
        self.url = url
        self.http = http.client(httpx.Timeout(read_timeout, connect=connect_timeout))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _post_wav(self, text: str, **request: Any) -> bytes:
        try:
            resp = await self.http.post(self.url, **request)
        except httpx.HTTPError as exc:
            raise tts_error(f"TTS {self.name} {self.url}: {exc!r}", exc) from exc
        if resp.status_code != 200:
            raise tts_error(
                f"TTS {self.name} {self.url}: HTTP {resp.status_code}: {resp.text[:300]}",
                status=resp.status_code,
            )
        return resp.content

    async def _speak_wav(self, body: bytes, sample_rate: int) -> AsyncIterator[Pcm]:
        pcm = wav_to_rate(body, sample_rate, f"{self.name} {self.url}")
        for chunk in _chunks(pcm, max(1, sample_rate // 2)):
            yield chunk

"""``[tts] platform = "stream_gsv"`` (alias ``StreamGSV``): GPT-SoVITS, streamed PCM.

JSON ``{speaker, input, sample_rate: 16000}`` -> s16le PCM at 16 kHz as it is synthesised (the
response's ``rate=`` label is ignored), re-chunked to 0.5 s and resampled to the asked rate; a
stream over ``max_tts_bytes`` (``[limits]``) is an error. ``[tts.text_optimization]``: each
segment is first rewritten for speech by an LLM (:mod:`.text_optimization`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import numpy as np

from echokit_fast import audio
from echokit_fast.backends import http, registry
from echokit_fast.backends.base import Pcm, Speaker
from echokit_fast.backends.schema import HttpUrl, Section, TextOptimization
from echokit_fast.backends.tts.gsv import GSV_RATE
from echokit_fast.backends.tts.speaker import NOTICES, HTTPSpeaker, tts_error
from echokit_fast.backends.tts.text_optimization import with_text_optimization

__all__ = ["StreamGSVSpeaker", "StreamGSVTTS"]

log = logging.getLogger(__name__)


class StreamGSVTTS(Section):
    """``[tts] platform = "stream_gsv"`` (alias ``StreamGSV``): GPT-SoVITS, streamed PCM."""

    platform: Literal["stream_gsv"] = "stream_gsv"
    url: HttpUrl
    speaker: str
    api_key: str = ""
    text_optimization: TextOptimization | None = None


class StreamGSVSpeaker(HTTPSpeaker):
    """GPT-SoVITS streaming: JSON ``{speaker, input, sample_rate: 16000}`` -> s16le PCM at
    16 kHz as it is synthesised (the server's ``rate=`` label is ignored), re-chunked to
    0.5 s; the last piece is whatever remains."""

    CHUNK_BYTES = 16000

    def __init__(self, cfg: StreamGSVTTS, **kw: Any) -> None:
        super().__init__(cfg.url, **kw)
        self.cfg = cfg
        self.name = "stream_gsv"

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        payload = {"speaker": self.cfg.speaker, "input": text, "sample_rate": GSV_RATE}
        resampler = audio.Resampler(GSV_RATE, sample_rate) if sample_rate != GSV_RATE else None
        where = self.where
        busy = 1
        while True:
            try:
                async with self.http.stream("POST", self.url, json=payload) as resp:
                    await self._status(resp)
                    buf = bytearray()
                    total = 0
                    async for data in resp.aiter_bytes():
                        total += len(data)
                        if total > self.max_bytes:
                            raise NOTICES.error(
                                f"{where}: a stream over {self.max_bytes} bytes", NOTICES.too_large
                            )
                        buf += data
                        while len(buf) >= self.CHUNK_BYTES:
                            piece = audio.pcm16_to_float(bytes(buf[: self.CHUNK_BYTES]))
                            del buf[: self.CHUNK_BYTES]
                            out = resampler.process(piece) if resampler else piece
                            if len(out):
                                yield out
                    if len(buf) % 2:
                        log.warning("%s: odd byte count; the last byte is dropped", where)
                        del buf[-1:]
                    tail = audio.pcm16_to_float(bytes(buf)) if buf else np.zeros(0, np.float32)
                    if resampler is not None:
                        tail = np.concatenate([resampler.process(tail), resampler.flush()])
                    if len(tail):
                        yield tail
            except http.TooManyRequests as exc:  # before any audio: the request is retried
                await self._wait_busy(exc, busy)
                busy += 1
                continue
            except httpx.HTTPError as exc:
                raise tts_error(f"{where}: {exc!r}", exc) from exc
            return


@registry.tts("stream_gsv", aliases=["StreamGSV"], config=StreamGSVTTS)
def build(cfg: StreamGSVTTS, needs: registry.Needs) -> Speaker:
    return with_text_optimization(
        StreamGSVSpeaker(cfg, max_bytes=needs.max_tts_bytes), cfg.text_optimization
    )

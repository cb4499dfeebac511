"""``[tts] platform = "gsv"`` (aliases ``GSV``, ``Stable``): GPT-SoVITS, one WAV per text.

JSON ``{speaker, input, sample_rate: 16000}`` -> a WAV; up to 3 tries of ``timeout_sec`` each,
retried on timeout only (as the reference). ``[tts.text_optimization]``: each segment is first
rewritten for speech by an LLM (:mod:`.text_optimization`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
from pydantic import Field

from echokit_fast.backends import registry
from echokit_fast.backends.base import Pcm, Speaker
from echokit_fast.backends.schema import HttpUrl, Section, TextOptimization
from echokit_fast.backends.tts.speaker import HTTPSpeaker, tts_error
from echokit_fast.backends.tts.text_optimization import with_text_optimization

__all__ = ["GSVTTS", "GSVSpeaker"]

log = logging.getLogger(__name__)

GSV_RATE = 16000


class GSVTTS(Section):
    """``[tts] platform = "gsv"`` (aliases ``GSV``, ``Stable``): GPT-SoVITS, whole WAV."""

    platform: Literal["gsv"] = "gsv"
    url: HttpUrl
    speaker: str
    api_key: str = ""
    timeout_sec: int = Field(default=15, gt=0)
    text_optimization: TextOptimization | None = None


class GSVSpeaker(HTTPSpeaker):
    """GPT-SoVITS batch: JSON ``{speaker, input, sample_rate: 16000}`` -> WAV; up to
    ``attempts`` tries of ``timeout_sec`` each, retried on timeout only."""

    def __init__(self, cfg: GSVTTS, *, attempts: int = 3, **kw: Any) -> None:
        super().__init__(cfg.url, **kw)
        self.cfg = cfg
        self.name = "gsv"
        self.attempts = attempts

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        payload = {"speaker": self.cfg.speaker, "input": text, "sample_rate": GSV_RATE}
        body = b""
        for attempt in range(1, self.attempts + 1):
            try:
                resp = await self.http.post(self.url, json=payload, timeout=self.cfg.timeout_sec)
            except httpx.TimeoutException as exc:
                if attempt < self.attempts:
                    log.info("TTS gsv %s: attempt %d timed out; retrying", self.url, attempt)
                    continue
                raise tts_error(
                    f"TTS gsv {self.url}: {self.attempts} attempts of {self.cfg.timeout_sec} s "
                    "timed out",
                    exc,
                ) from exc
            except httpx.HTTPError as exc:
                raise tts_error(f"TTS gsv {self.url}: {exc!r}", exc) from exc
            if resp.status_code != 200:
                raise tts_error(
                    f"TTS gsv {self.url}: HTTP {resp.status_code}: {resp.text[:300]}",
                    status=resp.status_code,
                )
            body = resp.content
            break
        async for chunk in self._speak_wav(body, sample_rate):
            yield chunk


@registry.tts("gsv", aliases=["GSV", "Stable"], config=GSVTTS)
def build(cfg: GSVTTS, needs: registry.Needs) -> Speaker:
    return with_text_optimization(GSVSpeaker(cfg), cfg.text_optimization)

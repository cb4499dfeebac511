"""``[tts] platform = "gsv"`` (aliases ``GSV``, ``Stable``): GPT-SoVITS, one WAV per text.

JSON ``{speaker, input, sample_rate: 16000}`` -> a WAV; up to 3 tries of ``timeout_sec`` each
(the whole request, its body included), retried on timeout only (as the reference).
``[tts.text_optimization]``: each segment is first rewritten for speech by an LLM
(:mod:`.text_optimization`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import Field

from echokit_fast.backends import registry
from echokit_fast.backends.base import Pcm, Speaker
from echokit_fast.backends.schema import HttpUrl, Section, TextOptimization
from echokit_fast.backends.tts.speaker import HTTPSpeaker
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
        body = await self._post_wav(
            attempts=self.attempts, timeout=self.cfg.timeout_sec, json=payload
        )
        async for chunk in self._speak_wav(body, sample_rate):
            yield chunk


@registry.tts("gsv", aliases=["GSV", "Stable"], config=GSVTTS)
def build(cfg: GSVTTS, needs: registry.Needs) -> Speaker:
    return with_text_optimization(
        GSVSpeaker(cfg, max_bytes=needs.max_tts_bytes), cfg.text_optimization
    )

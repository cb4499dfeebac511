"""``[tts] platform = "openai"`` (aliases ``Openai``, ``OpenAI``) and ``"groq"`` (alias
``Groq``): ``POST url`` with JSON ``{model, voice, input, response_format: "wav"}``, a WAV
back. Groq's speech API is OpenAI's, so one speaker serves both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from echokit_fast.backends import registry
from echokit_fast.backends.base import Pcm, Speaker
from echokit_fast.backends.schema import HttpUrl, Section
from echokit_fast.backends.tts.speaker import HTTPSpeaker

__all__ = ["GroqTTS", "OpenAISpeaker", "OpenAITTS"]


class OpenAITTS(Section):
    """``[tts] platform = "openai"`` (aliases ``Openai``, ``OpenAI``)."""

    platform: Literal["openai"] = "openai"
    api_key: str
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    url: HttpUrl = "https://api.openai.com/v1/audio/speech"


class GroqTTS(Section):
    """``[tts] platform = "groq"`` (alias ``Groq``)."""

    platform: Literal["groq"] = "groq"
    api_key: str
    voice: str
    model: str = "playai-tts"
    url: HttpUrl = "https://api.groq.com/openai/v1/audio/speech"


class OpenAISpeaker(HTTPSpeaker):
    """``openai`` / ``groq``: ``POST url`` JSON ``{model, voice, input, response_format: wav}``."""

    def __init__(self, cfg: OpenAITTS | GroqTTS, **kw: Any) -> None:
        super().__init__(cfg.url, **kw)
        self.cfg = cfg
        self.name = cfg.platform
        self.headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        payload = {
            "model": self.cfg.model,
            "voice": self.cfg.voice,
            "input": text,
            "response_format": "wav",
        }
        body = await self._post_wav(json=payload, headers=self.headers)
        async for chunk in self._speak_wav(body, sample_rate):
            yield chunk


def build(cfg: OpenAITTS | GroqTTS, needs: registry.Needs) -> Speaker:
    return OpenAISpeaker(cfg, max_bytes=needs.max_tts_bytes)


registry.tts("openai", aliases=["Openai", "OpenAI"], config=OpenAITTS)(build)
registry.tts("groq", aliases=["Groq"], config=GroqTTS)(build)

"""``[tts] platform = "fish"`` (alias ``Fish``): fish.audio, a MessagePack request with field
names, a WAV back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import msgpack

from echokit_fast.backends import registry
from echokit_fast.backends.base import Pcm, Speaker
from echokit_fast.backends.schema import HttpUrl, Section
from echokit_fast.backends.tts.speaker import HTTPSpeaker

__all__ = ["FishSpeaker", "FishTTS"]


class FishTTS(Section):
    """``[tts] platform = "fish"`` (alias ``Fish``): fish.audio."""

    platform: Literal["fish"] = "fish"
    api_key: str
    speaker: str
    url: HttpUrl = "https://api.fish.audio/v1/tts"


class FishSpeaker(HTTPSpeaker):
    """fish.audio: MessagePack body with field names, WAV reply."""

    def __init__(self, cfg: FishTTS, **kw: Any) -> None:
        super().__init__(cfg.url, **kw)
        self.cfg = cfg
        self.name = "fish"

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        payload = msgpack.packb(
            {
                "text": text,
                "chunk_length": 200,
                "format": "wav",
                "mp3_bitrate": 128,
                "reference_id": self.cfg.speaker,
                "normalize": True,
                "latency": "normal",
            }
        )
        headers = {
            "content-type": "application/msgpack",
            "model": "s1",
            "authorization": f"Bearer {self.cfg.api_key}",
        }
        body = await self._post_wav(content=payload, headers=headers)
        async for chunk in self._speak_wav(body, sample_rate):
            yield chunk


@registry.tts("fish", aliases=["Fish"], config=FishTTS)
def build(cfg: FishTTS, needs: registry.Needs) -> Speaker:
    return FishSpeaker(cfg, max_bytes=needs.max_tts_bytes)

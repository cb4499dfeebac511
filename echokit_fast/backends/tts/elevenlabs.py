"""``[tts] platform = "elevenlabs"`` (alias ``Elevenlabs``): ElevenLabs streaming TTS.

Schema only for now: a config naming it loads, and ``serve`` / ``check-config`` refuse it.
"""

from __future__ import annotations

from typing import Literal

from echokit_fast.backends import registry
from echokit_fast.backends.schema import Section

__all__ = ["ElevenLabsTTS"]


class ElevenLabsTTS(Section):
    """``[tts] platform = "elevenlabs"`` (alias ``Elevenlabs``)."""

    platform: Literal["elevenlabs"] = "elevenlabs"
    token: str
    voice: str
    model_id: str = ""
    language_code: str = ""
    url: str = "wss://api.elevenlabs.io/v1/text-to-speech"

    @property
    def effective_model_id(self) -> str:
        return self.model_id or "eleven_flash_v2_5"


registry.tts("elevenlabs", aliases=["Elevenlabs"], config=ElevenLabsTTS)

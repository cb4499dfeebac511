"""``[asr] platform = "local"`` (ours): in-process Whisper through faster-whisper.

This module is light (the config model and the registration); the engine, which imports
faster-whisper / CTranslate2, is :mod:`.engine`, imported only when the platform is built.

* ``model`` (``"base"``): a model name, a local model directory, or the installed model package;
* ``language`` (alias ``lang``): pin one language (``"en"``); ``""``/``"auto"`` = detect;
  or ``languages = ["en", "zh"]``: detect, but only among these (short clips are often
  misdetected otherwise). Not both;
* ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``;
* ``compute_type`` (``"int8"``), ``cpu_threads`` (``0`` = the library's default),
  ``beam_size`` (``1``, greedy: lowest latency), ``prompt`` (``""``, initial prompt);
* ``[asr.vad]`` as for the ``openai`` platform.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from echokit_fast.backends import registry
from echokit_fast.backends.base import Transcriber
from echokit_fast.backends.schema import Section, VadConfig, choices

__all__ = ["LocalASR"]


class LocalASR(Section):
    """``[asr] platform = "local"``: the embedded Whisper engine (ours)."""

    platform: Literal["local"] = "local"
    model: str = "base"
    language: str | None = Field(default=None, validation_alias=choices("language", "lang"))
    languages: list[str] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "int8"
    cpu_threads: int = Field(default=0, ge=0)
    beam_size: int = Field(default=1, ge=1)
    prompt: str = ""
    vad: VadConfig = Field(default_factory=VadConfig)

    @model_validator(mode="after")
    def _language(self) -> LocalASR:
        if self.language is not None and self.language.strip().lower() in ("", "auto"):
            self.language = None
        if self.languages is not None and not self.languages:
            self.languages = None
        if self.language is not None and self.languages is not None:
            raise ValueError("give either language (pin one) or languages (allowed set), not both")
        return self


@registry.asr("local", config=LocalASR)
def build(cfg: LocalASR, needs: registry.Needs) -> Transcriber:
    """The application's shared engine when given, else a new one for ``cfg``."""
    if needs.local_asr is not None:
        return needs.local_asr(cfg)
    from_config = registry.import_engine(f"{__name__}.engine", "from_config", "ASR")
    return from_config(cfg)

"""What every platform's config model is built from: the strict :class:`Section` base and the
small tables several platforms share (chat messages, ``[asr.vad]``, ``[tts.text_optimization]``).

Each platform module (``backends/asr/openai.py`` ...) defines its own section model on
:class:`Section`; :mod:`echokit_fast.config` validates a file's sections against them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Message", "Section", "TextOptimization", "VadConfig", "choices"]


class Section(BaseModel):
    """Base of every table: strict types like serde, unknown keys kept (reported as warnings)."""

    model_config = ConfigDict(strict=True, extra="allow", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        # `url` and `llm_chat_url` (say) are one key: giving both is ambiguous (serde: duplicate
        # field). Checked generically for every field that accepts several spellings.
        if isinstance(data, Mapping):
            for name, info in cls.model_fields.items():
                alias = info.validation_alias
                if isinstance(alias, AliasChoices):
                    given = [c for c in alias.choices if isinstance(c, str) and c in data]
                    if len(given) > 1:
                        raise ValueError(
                            f"{' and '.join(given)} are the same setting ({name}); give only one"
                        )
        return data

    def load_notes(self) -> Iterator[tuple[str, str]]:
        """``(key, note)`` pairs the config loader reports for this section (none by
        default; a platform overrides it, e.g. for keys that are accepted but unused)."""
        return iter(())


def choices(*names: str) -> AliasChoices:
    """The spellings one field accepts (``url`` or ``llm_chat_url``); giving two is an error."""
    return AliasChoices(*names)


class Message(Section):
    """A chat message (``sys_prompts``, ``dynamic_prompts``, ``prompts``)."""

    role: Literal["system", "user", "assistant", "tool"] = "assistant"
    content: str = ""


class TextOptimization(Section):
    """``[tts.text_optimization]``: rewrite each segment through a chat-completions endpoint."""

    url: str
    api_key: str = ""
    model: str = ""
    prompts: list[Message] | None = None

    @field_validator("url")
    @classmethod
    def _chat_endpoint(cls, url: str) -> str:
        path = url.split("?", 1)[0].rstrip("/")
        if re.search(r"/audio/(transcriptions|translations|speech)$", path):
            raise ValueError(
                f"{url!r} is an audio endpoint; text optimisation needs a chat-completions "
                "endpoint (e.g. https://api.openai.com/v1/chat/completions)"
            )
        return url


class VadConfig(Section):
    """``[asr.vad]``. After validation ``threshold`` is capped at 0.95 and ``neg_threshold`` is
    set (default ``threshold - 0.15``) and floored at 0.05, as in the reference."""

    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    neg_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    min_speech_duration_ms: int = Field(default=400, ge=0)
    max_silence_duration_ms: int = Field(default=200, ge=0)
    hangover_ms: int = Field(default=500, ge=0)

    @model_validator(mode="after")
    def _effective(self) -> VadConfig:
        self.threshold = min(self.threshold, 0.95)
        neg = self.threshold - 0.15 if self.neg_threshold is None else self.neg_threshold
        self.neg_threshold = max(neg, 0.05)
        return self

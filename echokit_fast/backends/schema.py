"""What every platform's config model is built from: the strict :class:`Section` base, the URL
types every ``url``-like key uses (:data:`HttpUrl`, :data:`WsUrl`, both :func:`url_check`) and
the small tables several platforms share (chat messages, ``[asr.vad]``,
``[tts.text_optimization]``).

Each platform module (``backends/asr/openai.py`` ...) defines its own section model on
:class:`Section`; :mod:`echokit_fast.config` validates a file's sections against them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    UrlConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "HttpUrl",
    "Message",
    "Section",
    "TextOptimization",
    "VadConfig",
    "WsUrl",
    "choices",
    "url_check",
]


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


def url_check(*schemes: str, what: str = "URL") -> Callable[[str], str]:
    """The validator of a URL key: a URL with one of ``schemes`` and a host (kept as written,
    not normalised). Every URL key of every section uses one (through :data:`HttpUrl` and
    :data:`WsUrl`, or ``Annotated[str, AfterValidator(url_check(...))]``)."""
    parser = TypeAdapter(
        Annotated[AnyUrl, UrlConstraints(allowed_schemes=list(schemes), host_required=True)]
    )
    wanted = f"{what} (" + ", ".join(f"{s}://" for s in schemes[:-1]) + f" or {schemes[-1]}://)"

    def check(url: str) -> str:
        shown = repr(url if len(url) <= 80 else url[:77] + "...")
        if not url:
            raise ValueError(f"expected a {wanted}, got an empty string")
        if url != url.strip():
            raise ValueError(f"expected a {wanted}, got {shown} (spaces around it)")
        try:
            parser.validate_python(url)
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "url_scheme":
                reason = f"scheme {urlsplit(url).scheme or 'missing'}"
            else:
                reason = err["msg"].removeprefix("Input should be a valid URL, ")
            raise ValueError(f"expected a {wanted}, got {shown} ({reason})") from None
        # The WHATWG parser repairs "http:/x" and "http:///x" into a host; HTTP clients do not.
        if not urlsplit(url).hostname:
            raise ValueError(f"expected a {wanted}, got {shown} (no host)")
        return url

    return check


def _websocket_scheme(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme.lower()) + "://" + rest


#: an HTTP endpoint (``http://`` or ``https://``)
HttpUrl = Annotated[str, AfterValidator(url_check("http", "https"))]
#: a WebSocket endpoint: ``ws://`` or ``wss://``; ``http(s)://`` is taken as ``ws(s)://``, as
#: the reference's WebSocket client does (the scheme is stored lower-case)
WsUrl = Annotated[
    str,
    AfterValidator(url_check("ws", "wss", "http", "https", what="WebSocket URL")),
    AfterValidator(_websocket_scheme),
]


class Message(Section):
    """A chat message (``sys_prompts``, ``dynamic_prompts``, ``prompts``)."""

    role: Literal["system", "user", "assistant", "tool"] = "assistant"
    content: str = ""


class TextOptimization(Section):
    """``[tts.text_optimization]``: rewrite each segment through a chat-completions endpoint."""

    url: HttpUrl
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
    set (default ``threshold - 0.15``) and floored at 0.05, as in the reference. A
    ``neg_threshold`` above ``threshold`` (as written) is an error: speech would end as soon as
    it started."""

    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    neg_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    min_speech_duration_ms: int = Field(default=400, ge=0)
    max_silence_duration_ms: int = Field(default=200, ge=0)
    hangover_ms: int = Field(default=500, ge=0)
    # End of turn: "silence" (hangover_ms of silence ends it) or "smart_turn" (at each pause
    # Smart Turn v3.2 judges the last 8 s: above smart_turn_threshold ends the turn at once,
    # otherwise smart_turn_max_wait_ms of silence does; echokit_fast/turn/smart_turn.py).
    turn_detector: Literal["silence", "smart_turn"] = "silence"
    smart_turn_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    smart_turn_max_wait_ms: int = Field(default=3000, ge=0, le=60000)
    # Answer a round's transcript while the user is silent after a pause, before the turn has
    # ended, its output held until the turn ends on that transcript (dropped otherwise;
    # docs/architecture.md#speculative-reply). Off in a config file: a dropped answer still
    # costs an LLM request. The embedded default (no config file) turns it on.
    speculative_reply: bool = False
    # Start transcribing at the first quiet VAD window after speech instead of at the pause
    # (max_silence_duration_ms later): the transcript is ready sooner when the turn then ends,
    # at the cost of a transcription for each short dip inside a sentence. Off in a config
    # file (more ASR requests than the reference); on in the embedded default.
    early_asr: bool = False

    @field_validator("neg_threshold")
    @classmethod
    def _below_threshold(cls, neg: float | None, info: ValidationInfo) -> float | None:
        threshold = info.data.get("threshold")
        if neg is not None and threshold is not None and neg > threshold:
            raise ValueError(
                f"{neg} is above threshold {threshold}: speech would end as soon as it started "
                "(neg_threshold is where speech ends, at or below threshold)"
            )
        return neg

    @model_validator(mode="after")
    def _effective(self) -> VadConfig:
        self.threshold = min(self.threshold, 0.95)
        neg = self.threshold - 0.15 if self.neg_threshold is None else self.neg_threshold
        self.neg_threshold = max(neg, 0.05)
        return self

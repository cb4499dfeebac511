"""The platforms of ``[asr]``, ``[tts]`` and ``[llm]``: one list, filled by the platform modules.

A platform module registers its config model, and the function that builds its backend when
this server can run it::

    @registry.tts("stream_gsv", aliases=["StreamGSV"], config=StreamGSVTTS)
    def build(cfg: StreamGSVTTS, needs: Needs) -> Speaker:
        return StreamGSVSpeaker(cfg)

    registry.tts("some_tts", aliases=["SomeTTS"], config=SomeTTS)  # schema only

Calling ``registry.tts(...)`` registers the platform at once (its config parses); applying the
result to a function gives it a build. A platform without a build is refused by ``serve`` and
``check-config`` (:func:`unsupported`).

:data:`MODULES` names every platform module, in the order a section's platforms are listed
("expected one of ..."); :func:`load` imports them (:mod:`echokit_fast.config` does, once), so
registration is explicit and complete. The config loader reads the platform tables from here,
and :func:`build_backends` builds the device backends of a layout of :data:`LAYOUTS` from them.
The embedded engines' packages are light: loading them does not import faster-whisper or ONNX.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from echokit_fast.backends.base import Backends, Speaker, Transcriber
from echokit_fast.backends.schema import Section

if TYPE_CHECKING:
    from echokit_fast.config import Config

__all__ = [
    "KINDS",
    "LAYOUTS",
    "MODULES",
    "Needs",
    "Platform",
    "asr",
    "build_backends",
    "get",
    "import_engine",
    "llm",
    "load",
    "platforms",
    "tts",
    "unregister",
    "unsupported",
    "unsupported_sections",
]

Kind = Literal["asr", "tts", "llm"]
#: the tagged sections, in the order :func:`unsupported` reports them
KINDS: tuple[Kind, ...] = ("asr", "tts", "llm")

#: every platform module, per section, in listing order (a new platform: its module here)
MODULES: dict[Kind, tuple[str, ...]] = {
    "asr": tuple(f"echokit_fast.backends.asr.{m}" for m in ("openai", "paraformer_v2", "local")),
    "tts": tuple(
        f"echokit_fast.backends.tts.{m}"
        for m in ("openai", "gsv", "stream_gsv", "fish", "cosyvoice", "elevenlabs", "local")
    ),
    "llm": tuple(
        f"echokit_fast.backends.llm.{m}" for m in ("openai_chat", "openai_responses", "local")
    ),
}


#: the layouts this server runs, each with the tagged sections it builds
LAYOUTS: dict[str, tuple[Kind, ...]] = {
    "pipeline": KINDS,
    "claude": ("asr", "tts"),  # the conversation is the [claude] bridge
    "gemini_tts": ("tts",),
    "gemini": (),
}


@dataclass(frozen=True)
class Needs:
    """What a build may use besides its config section: the engines the application shares
    (``local_asr(cfg)`` / ``local_tts(cfg)`` / ``local_llm(cfg)``; None: the platform loads its
    own), the
    ``[limits] max_history_bytes`` of a conversation's history (None: unbounded), and the
    ``[limits]`` caps on what a remote backend may send and on the LLM's stream (the defaults
    are those of ``[limits]``)."""

    local_asr: Callable[[Any], Transcriber] | None = None
    local_tts: Callable[[Any], Speaker] | None = None
    local_llm: Callable[[Any], Any] | None = None
    max_history_bytes: int | None = None
    max_json_bytes: int = 1 << 20
    max_tts_bytes: int = 64 << 20
    llm_first_token_s: float = 60.0
    llm_stall_s: float = 30.0


#: ``build(section, needs)``: a Transcriber ([asr]), a Speaker ([tts]) or a zero/one-argument
#: factory of Conversations ([llm], called with the device id)
Build = Callable[[Any, Needs], Any]


@dataclass
class Platform:
    """One registered platform of a section."""

    kind: Kind
    #: the canonical name (``platform`` of the validated section)
    name: str
    #: every accepted spelling, the canonical name first
    spellings: tuple[str, ...]
    config: type[Section]
    #: the module that registered it
    module: str
    #: None: the config parses but this server cannot run it yet
    build: Build | None = None
    #: keys that make a section without ``platform`` this platform (the reference's untagged
    #: formats: ``[asr]`` before 0.3.0, ``[llm]`` before 0.3.1); the first platform in listing
    #: order with one of its keys present wins, as serde's untagged enums chose
    untagged: tuple[str, ...] = ()

    @property
    def runnable(self) -> bool:
        return self.build is not None

    def __call__(self, build: Build) -> Build:
        """Used as a decorator: ``build`` is how this platform's backend is made."""
        if self.build is not None:
            raise ValueError(f"[{self.kind}] platform {self.name!r} already has a build")
        self.build = build
        return build


_PLATFORMS: dict[Kind, dict[str, Platform]] = {kind: {} for kind in KINDS}


def register(
    kind: Kind,
    name: str,
    *,
    config: type[Section],
    aliases: Iterable[str] = (),
    untagged: Iterable[str] = (),
) -> Platform:
    """Register platform ``name`` of section ``kind`` (see the module docstring)."""
    declared = config.model_fields.get("platform")
    if declared is None or declared.default != name:
        raise ValueError(f"{config.__name__} must declare platform: Literal[{name!r}] = {name!r}")
    spellings = (name, *(a for a in aliases if a != name))
    taken = {s for p in _PLATFORMS[kind].values() for s in p.spellings}
    clash = [s for s in spellings if s in taken]
    if clash:
        raise ValueError(f"[{kind}] platform spelling(s) {', '.join(clash)} already registered")
    platform = Platform(kind, name, spellings, config, config.__module__, untagged=tuple(untagged))
    _PLATFORMS[kind][name] = platform
    return platform


def asr(
    name: str, *, config: type[Section], aliases: Iterable[str] = (), untagged: Iterable[str] = ()
) -> Platform:
    """Register an ``[asr]`` platform; apply the result to its build function."""
    return register("asr", name, config=config, aliases=aliases, untagged=untagged)


def tts(
    name: str, *, config: type[Section], aliases: Iterable[str] = (), untagged: Iterable[str] = ()
) -> Platform:
    """Register a ``[tts]`` platform; apply the result to its build function."""
    return register("tts", name, config=config, aliases=aliases, untagged=untagged)


def llm(
    name: str, *, config: type[Section], aliases: Iterable[str] = (), untagged: Iterable[str] = ()
) -> Platform:
    """Register an ``[llm]`` platform; apply the result to its build function."""
    return register("llm", name, config=config, aliases=aliases, untagged=untagged)


def unregister(kind: Kind, name: str) -> None:
    """Remove a platform (for tests that register a throwaway one)."""
    del _PLATFORMS[kind][name]


def load() -> None:
    """Import every platform module of :data:`MODULES` (each registers itself once)."""
    for names in MODULES.values():
        for name in names:
            importlib.import_module(name)


def platforms(kind: Kind) -> list[Platform]:
    """The platforms of ``kind``: those of :data:`MODULES` in its order (two of one module in
    the order they registered), then any other (a test's stand-in) in registration order."""
    order = MODULES[kind]

    def position(p: Platform) -> int:
        return order.index(p.module) if p.module in order else len(order)

    return sorted(_PLATFORMS[kind].values(), key=position)


def get(kind: Kind, name: str) -> Platform | None:
    """The platform of ``kind`` whose canonical name is ``name``."""
    return _PLATFORMS[kind].get(name)


def import_engine(module: str, attr: str, what: str) -> Any:
    """``module.attr`` of an embedded engine, imported when first built (the engines are heavy
    and optional); a missing one is a RuntimeError that says what to install."""
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"the embedded {what} engine is not available ({module}.{attr}: {exc}); "
            f"install echokit-fast with its local {what} extra or choose a remote platform"
        ) from exc


def unsupported(config: Config) -> list[str]:
    """What in ``config`` this server cannot run yet (empty when everything is supported):
    one sentence per problem, naming the section and the platform."""
    return [problem for _kind, problem in unsupported_sections(config)]


def unsupported_sections(config: Config) -> list[tuple[Kind | None, str]]:
    """:func:`unsupported`'s sentences, each with the section it is about (None: the
    layout)."""
    kinds = LAYOUTS.get(config.layout)
    if kinds is None:
        supported = ", ".join(LAYOUTS)
        return [(None, f"the {config.layout} layout is not supported yet (supported: {supported})")]
    problems: list[tuple[Kind | None, str]] = []
    for kind in kinds:
        name = getattr(getattr(config, kind), "platform", None)
        runnable = [p.name for p in platforms(kind) if p.runnable]
        if name not in runnable:
            problems.append(
                (
                    kind,
                    f"[{kind}] platform {name!r} is not supported yet "
                    f"(supported: {', '.join(runnable)})",
                )
            )
    return problems


def _build(kind: Kind, cfg: Any, needs: Needs) -> Any:
    platform = get(kind, cfg.platform)
    if platform is None or platform.build is None:
        raise NotImplementedError(f"[{kind}] platform {cfg.platform!r} is not supported yet")
    return platform.build(cfg, needs)


def build_backends(
    config: Config,
    *,
    local_asr: Callable[[Any], Transcriber] | None = None,
    local_tts: Callable[[Any], Speaker] | None = None,
    local_llm: Callable[[Any], Any] | None = None,
) -> Backends:
    """``(transcriber, speaker, conversation_factory)`` for a config of :data:`LAYOUTS`: the
    pipeline's three; the claude layout's ASR and TTS with the ``[claude]`` bridges; or the
    Gemini Live layouts' ``(None, speaker or None, the devices' Gemini Live conversations)``.
    No connection is opened here.

    Call inside the server's event loop (the HTTP clients belong to it); ``aclose()`` the
    result at shutdown. MCP tools are listed on the first reply (the LLM backends load them
    lazily). Local platforms import their engines when built; a missing engine is a
    RuntimeError naming it (``local_asr``/``local_tts``/``local_llm`` supply shared engines
    instead, e.g. the app's). Platforms registered without a build raise NotImplementedError.
    """
    kinds = LAYOUTS.get(config.layout)
    if kinds is None or any(getattr(config, kind) is None for kind in kinds):
        raise ValueError(f"build_backends cannot build the {config.layout} layout")
    needs = Needs(
        local_asr=local_asr,
        local_tts=local_tts,
        local_llm=local_llm,
        max_history_bytes=config.limits.max_history_bytes,
        max_json_bytes=config.limits.max_json_bytes,
        max_tts_bytes=config.limits.max_tts_bytes,
        llm_first_token_s=config.limits.llm_first_token_s,
        llm_stall_s=config.limits.llm_stall_s,
    )
    if config.layout in ("gemini", "gemini_tts"):
        from echokit_fast.backends.gemini.client import GeminiLive

        assert config.gemini is not None
        speaker = None if config.tts is None else _build("tts", config.tts, needs)
        live = GeminiLive(config.gemini, text_answers=speaker is not None)
        return Backends(None, speaker, live.conversation)
    if config.layout == "claude":
        from echokit_fast.backends.claude import ClaudeBridges

        assert config.claude is not None
        conversations = ClaudeBridges(config.claude.url, timeout=config.limits.claude_timeout_s)
    else:
        conversations = _build("llm", config.llm, needs)
    return Backends(
        _build("asr", config.asr, needs),
        _build("tts", config.tts, needs),
        conversations,
    )

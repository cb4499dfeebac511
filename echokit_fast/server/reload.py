"""Applying a new config to a running server without dropping its devices (the console's
config editor saves, then calls :func:`apply`).

What changes at once: the AI sections (``[asr]`` with its ``[asr.vad]``, ``[tts]``,
``[llm]``, ``[gemini]``, ``[claude]``: the layout) and ``hello_wav``. New backend clients and
device settings are built from them and swapped into the :class:`AppState`; the connected
devices stay connected, and each one's next turn uses them (a turn running ends on the old
ones, which are closed once the running turns are over). A new LLM is probed as at start-up
(the status page shows the answer). A backend whose section did not
change is kept as it is, so is each device's conversation (its history) when nothing it
depends on changed; otherwise the next turn starts a new conversation.

What needs a restart, reported as such and kept as it runs: ``addr`` (the listen address),
``[server]`` (origins and keys: the middleware holds them, ``--api-key`` may replace them),
``[limits]`` (the connection edge and the TTS admission hold them), ``[xiaozhi]``,
``[record]``, and an in-process engine whose own settings changed (a Whisper model, a voice,
a GGUF file: the engine is loaded once). TLS and the other ``serve`` flags are not in the
file at all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.base import Backends
from echokit_fast.backends.llm.local import LocalLLM
from echokit_fast.backends.tts.local import LocalTTS
from echokit_fast.config import Config
from echokit_fast.devices.echokit import routes as device
from echokit_fast.devices.echokit.output import load_hello
from echokit_fast.server.lifecycle import llm_models_url, probe_llm
from echokit_fast.server.state import AppState

__all__ = ["LIVE", "RESTART", "Applied", "apply"]

log = logging.getLogger("echokit_fast.server")

#: the config's parts that change while the server runs
LIVE = ("layout", "asr", "tts", "llm", "gemini", "claude", "hello_wav", "hello_path")
#: the parts that need a restart, and why
RESTART = {
    "addr": "addr: the server listens where it started until it restarts",
    "server": "[server]: origins, API keys and device checks change at the next start",
    "limits": "[limits]: the connection edge and the engines' caps change at the next start",
    "xiaozhi": "[xiaozhi]: the xiaozhi front end's settings change at the next start",
    "record": "[record]: record mode's folder and callback change at the next start",
}
#: the in-process engines: (section, config model, AppState attribute, what it is)
ENGINES = (
    ("asr", LocalASR, "asr", "the in-process Whisper engine"),
    ("tts", LocalTTS, "tts", "the in-process TTS engine"),
    ("llm", LocalLLM, "llm", "the in-process LLM"),
)

_tasks: set[asyncio.Task[None]] = set()  # closing old clients, probing a new LLM


@dataclass
class Applied:
    """What :func:`apply` did: the parts applied at once and those that need a restart."""

    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)


def _engine_kept(state: AppState, running: Config, new: Config) -> list[str]:
    out = []
    for kind, model, attr, what in ENGINES:
        section = getattr(new, kind)
        if getattr(state, attr) is None or not isinstance(section, model):
            continue
        was = getattr(running, kind)
        # an engine built without its section (the HTTP API's) has the defaults; the LLM is
        # loaded only for a local [llm], so its section is always there
        was = was if isinstance(was, model) else model()
        if section.model_dump(exclude={"vad"}) != was.model_dump(exclude={"vad"}):
            out.append(f"[{kind}]: {what} keeps its settings until a restart")
    return out


def _keys(cfg: Config) -> dict[str, Any]:
    """What each backend depends on: one unchanged is kept."""
    return {
        "transcriber": (cfg.layout, cfg.asr),
        "speaker": (cfg.layout, cfg.tts),
        "conversation_factory": (cfg.layout, cfg.llm, cfg.claude, cfg.gemini, cfg.tts is None),
    }


async def _aclose(state: AppState, pieces: list[Any]) -> None:
    engines = state.loaded()
    for piece in pieces:
        owner = getattr(piece, "__self__", piece)  # a bound method's object
        close = getattr(owner, "aclose", None)
        if close is not None and owner not in engines:
            try:
                await close()
            except Exception:  # an old client: nothing depends on it any more
                log.warning("closing a replaced backend client failed", exc_info=True)


async def _close_after_turns(state: AppState, pieces: list[Any]) -> None:
    sessions = state.sessions.sessions.values() if state.sessions is not None else ()
    turns = [s.turn for s in sessions if s.turn is not None and not s.turn.done()]
    if turns:
        await asyncio.wait(turns, timeout=state.config.limits.turn_s)
    await _aclose(state, pieces)


async def _probe(state: AppState, cfg: Config) -> None:
    reachable = await probe_llm(cfg)
    if state.config is cfg:  # (not replaced meanwhile by a later save)
        state.llm_reachable = reachable


def _background(coro: Any, name: str) -> None:
    task = asyncio.create_task(coro, name=name)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def apply(state: AppState, new: Config, before: Config) -> Applied:
    """Run ``new`` (a config that passed the check, ``serve`` can run it) from now on, as
    the module docstring says; ``before``: the config file as it was (what the restart
    notes compare with). Call it on the server's loop."""
    running = state.config
    out = Applied()
    for key, why in RESTART.items():
        if getattr(new, key) != getattr(before, key):
            out.needs_restart.append(why)
    out.needs_restart += _engine_kept(state, running, new)
    cfg = running.model_copy(update={k: getattr(new, k) for k in LIVE})
    out.applied = [k for k in LIVE[:-1] if getattr(cfg, k) != getattr(running, k)]
    if not out.applied:
        return out

    loads = [(state.asr_engine, cfg.asr, LocalASR), (state.tts_engine, cfg.tts, LocalTTS)]
    loads.append((state.llm_engine, cfg.llm, LocalLLM))
    for load, section, model in loads:  # an engine not loaded yet that the new config runs
        if isinstance(section, model):
            await asyncio.to_thread(load, section)
    built = device.build(state, cfg)
    old = state.backends
    pieces, unused, replaced = {}, [], []
    same = _keys(running), _keys(cfg)
    for name in Backends._fields:
        fresh = getattr(built, name)
        if old is not None and same[0][name] == same[1][name]:
            pieces[name] = getattr(old, name)
            unused.append(fresh)
        else:
            pieces[name] = fresh
            if old is not None:
                replaced.append(getattr(old, name))
    backends = Backends(**pieces)
    settings = device.device_settings(state, cfg, backends)
    await asyncio.to_thread(settings.turn_detector.prepare)
    if settings.stream_detector is not None:
        await asyncio.to_thread(settings.stream_detector.prepare)
    hello = await asyncio.to_thread(load_hello, cfg.hello_path)

    state.config = cfg
    state.backends = backends
    state.device_settings = settings
    state.device_hello = hello or b""
    if state.sessions is not None:
        new_factory = old is None or backends.conversation_factory is not old.conversation_factory
        state.sessions.reconfigure(backends, settings, conversations=new_factory)
    await _aclose(state, unused)
    _background(_close_after_turns(state, replaced), "echokit-reload-close")
    if "llm" in out.applied or "layout" in out.applied:
        state.llm_reachable = None  # (the status page's: the start-up probe's was another's)
        if state.probe_llm and llm_models_url(cfg) is not None:
            _background(_probe(state, cfg), "echokit-reload-probe")
    log.info("config applied: %s", ", ".join(out.applied))
    return out

"""The application state: the configuration and the engines every request and session shares.

One :class:`AppState` per application (``create_app(state=...)``); two apps in one process
(tests) share nothing through it. Each engine is a typed attribute: ``None`` until it is built
(on first use, or by the start-up loader of :mod:`echokit_fast.server.lifecycle`), or installed
by whoever creates the state (tests install fakes: ``AppState(asr=whisper)``,
``state.backends = Backends(...)``). The ``*_engine()`` accessors build an engine once even
when several threads ask at the same time; building is blocking (a model load), so async code
calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from echokit_fast.backends import registry
from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.asr.local.engine import LocalWhisper
from echokit_fast.backends.base import Backends
from echokit_fast.backends.llm.local import LocalLLM
from echokit_fast.backends.tts.local import LocalTTS
from echokit_fast.backends.tts.local import engine as tts
from echokit_fast.backends.vad.silero import SileroVad
from echokit_fast.config import Config, default_config
from echokit_fast.conversation.segmenter import SegmenterFactory
from echokit_fast.conversation.session import SessionManager, Settings
from echokit_fast.conversation.trace import RecentTurns
from echokit_fast.server.workers import WorkerSpec

if TYPE_CHECKING:
    from echokit_fast.api.vad import RealtimeVad
    from echokit_fast.backends.llm.local.engine import LocalLLMEngine

__all__ = ["DEFAULT_DRAIN_TIMEOUT", "DEFAULT_MAX_BODY_BYTES", "AppState"]

T = TypeVar("T")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024  # 10 MiB, as silero_vad_server
#: how long a SIGTERM/SIGINT drain lets running turns finish
DEFAULT_DRAIN_TIMEOUT = 10.0
#: a record-mode socket silent this long is closed
RECORD_IDLE_S = 60.0

_ENGINES = ("vad", "asr", "tts", "llm")


@dataclass(eq=False)
class AppState:
    config: Config = field(default_factory=default_config)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: where record mode writes (default: the config's ``[record] dir``)
    record_dir: Path | None = None
    record_idle_s: float = RECORD_IDLE_S
    #: seconds a SIGTERM/SIGINT drain lets running turns finish
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    #: probe the configured LLM at start-up (a warning when it is unreachable)
    probe_llm: bool = True
    #: the config file ``serve`` was started with (None: the embedded default)
    config_path: Path | None = None
    #: the console's config editor may save that file and apply it (``serve --config-write``)
    config_write: bool = False
    #: which worker of ``serve --workers`` this is (None: the only process)
    worker: WorkerSpec | None = None
    #: every other worker is ready too (``GET /ready`` waits for it; a single process: True)
    peers_ready: bool = True

    # engines (None: not built yet)
    vad: SileroVad | None = None
    asr: LocalWhisper | None = None
    tts: tts.LocalSpeaker | None = None
    #: the in-process LLM (``[llm] platform = "local"`` only)
    llm: LocalLLMEngine | None = None
    #: the device pipeline's clients, built in the running loop at start-up
    backends: Backends | None = None
    #: the device settings (the turn detectors: VAD parameters from ``[asr.vad]``)
    device_settings: Settings | None = None
    #: the hello file's bytes sent to a fresh EchoKit connection (b"": no hello; None: not
    #: read yet)
    device_hello: bytes | None = None
    #: the segmenter factory of device answers (None: the default grouping)
    segmenter: SegmenterFactory | None = None

    # services, set when their routes are built
    sessions: SessionManager | None = None
    realtime_vad: RealtimeVad | None = None

    #: True once every configured engine is loaded (GET /ready answers 200)
    ready: bool = False
    #: why loading failed (``serve`` then exits 1)
    load_error: BaseException | None = None
    #: the start-up probe of the LLM (:func:`~echokit_fast.server.lifecycle.probe_llm`):
    #: whether it answered (None: not probed, or not done yet)
    llm_reachable: bool | None = None
    #: the records of the last turns (devices' and the realtime endpoint's)
    turns: RecentTurns = field(default_factory=RecentTurns)
    #: a SIGTERM/SIGINT drain began (:meth:`start_drain`)
    draining: bool = False

    _locks: dict[str, threading.Lock] = field(
        default_factory=lambda: {name: threading.Lock() for name in _ENGINES},
        init=False,
        repr=False,
    )
    _ready_event: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.record_dir is None:
            self.record_dir = Path(self.config.record.dir)

    # -- engines -----------------------------------------------------------------------

    def vad_model(self) -> SileroVad:
        """The Silero VAD model (v6) of this app."""
        return self._once("vad", SileroVad)

    def asr_engine(self, cfg: Any = None) -> LocalWhisper:
        """The embedded Whisper engine, from the config's ``[asr]`` (or `cfg`, a config
        being applied) when it is the local platform, else the defaults (the HTTP API always
        serves the embedded engine). Built once: a later `cfg` does not change it."""
        cfg = self.config.asr if cfg is None else cfg
        section = cfg if isinstance(cfg, LocalASR) else LocalASR()
        return self._once("asr", lambda: LocalWhisper.from_config(section))

    def tts_engine(self, cfg: Any = None) -> tts.LocalSpeaker:
        """The embedded TTS engine, from the config's ``[tts]`` (or `cfg`, as for
        :meth:`asr_engine`) when it is the local platform, else the defaults; its streams as
        ``[limits]`` shares them between devices and the HTTP API."""
        cfg = self.config.tts if cfg is None else cfg
        section = cfg if isinstance(cfg, LocalTTS) else None
        limits = self.config.limits
        return self._once(
            "tts",
            lambda: tts.from_config(
                section,
                max_streams=limits.tts_streams,
                device_reserve=limits.tts_device_reserve,
                queue_s=limits.tts_queue_s,
            ),
        )

    def llm_engine(self, cfg: Any = None) -> LocalLLMEngine:
        """The in-process LLM of the config's ``[llm]`` (or `cfg`, as for
        :meth:`asr_engine`), which must be the local platform."""
        cfg = self.config.llm if cfg is None else cfg
        if not isinstance(cfg, LocalLLM):
            raise RuntimeError('no in-process LLM: [llm] platform is not "local"')
        engine = "echokit_fast.backends.llm.local.engine"
        load = registry.import_engine(engine, "from_config", "LLM")
        return self._once("llm", lambda: load(cfg))

    def loaded(self) -> list[Any]:
        """The engines built or installed so far."""
        return [e for e in (self.vad, self.asr, self.tts, self.llm) if e is not None]

    def _once(self, name: str, build: Callable[[], T]) -> T:
        engine = getattr(self, name)
        if engine is None:
            with self._locks[name]:
                engine = getattr(self, name)
                if engine is None:
                    engine = build()
                    setattr(self, name, engine)
        return engine

    # -- readiness ---------------------------------------------------------------------

    def mark_ready(self) -> None:
        """Every configured engine is loaded (call it on the server's loop)."""
        self.ready = True
        self._ready_event.set()

    def fail(self, exc: BaseException) -> None:
        """Loading failed (call it on the server's loop): waiters go on, to find no engine."""
        self.load_error = exc
        self._ready_event.set()

    async def wait_ready(self) -> None:
        """Until :meth:`mark_ready` or :meth:`fail` (on the server's loop)."""
        await self._ready_event.wait()

    def start_drain(self) -> None:
        """The server is shutting down (call it on the server's loop): the live feeds that
        wait for the next turn (the status page's) end now, so none holds up the drain."""
        self.draining = True
        self.turns.wake()

    async def aclose(self) -> None:
        """Close the backend clients and free the in-process LLM (shutdown)."""
        backends, self.backends = self.backends, None
        close = getattr(backends, "aclose", None)
        if close is not None:
            await close()
        llm, self.llm = self.llm, None
        if llm is not None:
            await asyncio.to_thread(llm.close)

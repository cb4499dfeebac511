"""The HTTP/WebSocket application served by `echokit-fast serve`.

`create_app` assembles the routes of every service module in `echokit_fast.api`
(each exposes `routes(ctx) -> list[BaseRoute]`) around one `AppContext`, which
holds the configuration and the engines shared by all requests and sessions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from echokit_fast import __version__
from echokit_fast.config import Config, default_config

T = TypeVar("T")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024  # 10 MiB, as silero_vad_server


class AppContext:
    """Configuration plus lazily created, process-wide engines (VAD, ASR, TTS ...).

    Engines are expensive to load and safe to share, so each is built once, on
    first use, by `get(key, factory)`; concurrent first uses build it once.
    """

    def __init__(self, config: Config | None = None, *, max_body_bytes: int | None = None):
        self.config = config if config is not None else default_config()
        self.max_body_bytes = max_body_bytes or DEFAULT_MAX_BODY_BYTES
        self._engines: dict[str, Any] = {}
        self._lock = threading.Lock()
        #: set once `preload` has loaded every configured engine (GET /ready answers 200)
        self.ready = False

    def get(self, key: str, factory: Callable[[], T]) -> T:
        engine = self._engines.get(key)
        if engine is None:
            with self._lock:
                engine = self._engines.get(key)
                if engine is None:
                    engine = factory()
                    self._engines[key] = engine
        return engine

    def loaded(self) -> list[Any]:
        """The engines built or installed so far (a snapshot)."""
        with self._lock:
            return list(self._engines.values())

    def put(self, key: str, engine: Any) -> None:
        """Install an engine (tests, preloading)."""
        with self._lock:
            self._engines[key] = engine


def preload(ctx: AppContext) -> None:
    """Load the engines the configuration uses (VAD always; Whisper and the TTS engine when
    their platform is "local") and build the device pipeline's clients, so that the first
    device does not wait for them and a missing model is reported at start-up. Each step
    logs how long it took."""
    import logging
    import time

    from echokit_fast.backends.vad import silero as vad

    log = logging.getLogger("echokit_fast")
    steps: list[tuple[str, Callable[[], Any]]] = [("Silero VAD", vad.SileroVad.shared)]
    if getattr(ctx.config.asr, "platform", None) == "local":
        from echokit_fast.backends.asr.local import engine as asr

        steps.append(("Whisper ASR", lambda: asr.shared(ctx)))
    if getattr(ctx.config.tts, "platform", None) == "local":
        from echokit_fast.backends.tts.local import engine as tts

        steps.append(("TTS", lambda: tts.shared(ctx)))
    if getattr(ctx.config, "layout", None) == "pipeline":
        from echokit_fast.devices.echokit import routes as device

        steps.append(("device pipeline", lambda: device.prepare(ctx)))
    for what, load in steps:
        t0 = time.perf_counter()
        load()
        log.info("%s ready in %.2f s", what, time.perf_counter() - t0)
    ctx.ready = True


async def version(_request: Request) -> JSONResponse:
    return JSONResponse({"version": __version__})


async def health(_request: Request) -> JSONResponse:
    """200 while the process serves (a liveness probe)."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    """200 once the configured engines are loaded, 503 before (a readiness probe)."""
    if request.app.state.ctx.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "loading"}, status_code=503)


def create_app(config: Config | None = None, *, context: AppContext | None = None) -> Starlette:
    from echokit_fast import api

    ctx = context if context is not None else AppContext(config)
    routes: list[BaseRoute] = [
        Route("/version", version, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]
    for module in api.service_modules():
        routes.extend(module.routes(ctx))
    app = Starlette(routes=routes)
    app.state.ctx = ctx
    return app

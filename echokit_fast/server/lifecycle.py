"""The server's life: start-up (engines loaded while it listens, the LLM probe), the SIGTERM /
SIGINT drain and shutdown.

* :func:`lifespan` (the Starlette lifespan of every app): at start-up it starts
  :func:`load_engines` and :func:`probe_llm` in the background, so the server listens at once
  (``GET /ready`` answers 503 until the engines are loaded; the probe's answer is kept in
  ``AppState.llm_reachable``); at shutdown it closes the backend clients.
* :class:`Server` (what ``echokit-fast serve`` runs): uvicorn's server, whose first SIGTERM or
  SIGINT drains instead of dropping everything: end the status page's live feeds
  (``AppState.start_drain``), stop accepting connections, let running turns
  finish (``AppState.drain_timeout``, 10 s), send every device ``EndResponse`` and a Close
  frame, then uvicorn's own shutdown. A second signal is uvicorn's (SIGINT: exit now). Its
  connections go through :mod:`echokit_fast.server.edge` (the ``[limits]`` timeouts and
  connection caps), with the uvicorn settings of :func:`uvicorn_config`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from echokit_fast.backends import registry
from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.llm.local import LocalLLM
from echokit_fast.backends.llm.openai_chat import OpenAIChatLLM
from echokit_fast.backends.llm.openai_responses import OpenAIResponsesLLM
from echokit_fast.backends.tts.local import LocalTTS
from echokit_fast.config import Config
from echokit_fast.devices.echokit import routes as device
from echokit_fast.server import edge, workers
from echokit_fast.server.state import AppState

__all__ = [
    "PROBE_TIMEOUT",
    "READY_MESSAGE",
    "Server",
    "check_tls",
    "lifespan",
    "llm_models_url",
    "load_engines",
    "probe_llm",
    "serve",
    "uvicorn_config",
]

log = logging.getLogger("echokit_fast.server")

#: seconds the start-up probe of the LLM waits for an answer
PROBE_TIMEOUT = 2.0
#: the line `load_engines` logs when the server is ready
READY_MESSAGE = "ready: every configured engine is loaded"


async def load_engines(state: AppState) -> None:
    """Load the engines the configuration uses (the Silero VAD always; Whisper, the TTS
    engine and the LLM when a served layout, ``registry.LAYOUTS``, runs them in-process) in worker
    threads, then build the device server's backend clients in this loop; each step logs how
    long it took. Marks the state
    ready, or records the failure in ``state.load_error`` (``serve`` then exits 1)."""
    config = state.config
    served = config.layout in registry.LAYOUTS
    local = served and state.backends is None  # installed backends need no local engine
    steps: list[tuple[str, Callable[[], Any]]] = [("Silero VAD", state.vad_model)]
    if local and isinstance(config.asr, LocalASR):
        steps.append(("Whisper ASR", state.asr_engine))
    if local and isinstance(config.tts, LocalTTS):
        steps.append(("TTS", state.tts_engine))
    if local and isinstance(config.llm, LocalLLM):
        steps.append((f"LLM {config.llm.model}", state.llm_engine))
    try:
        for what, build in steps:
            t0 = time.perf_counter()
            await asyncio.to_thread(build)
            log.info("%s ready in %.2f s", what, time.perf_counter() - t0)
        if served:
            t0 = time.perf_counter()
            device.prepare(state)
            log.info("device pipeline ready in %.2f s", time.perf_counter() - t0)
    except Exception as exc:  # a missing model, a broken install: serve reports it and stops
        log.debug("loading the engines failed", exc_info=True)
        state.fail(exc)
        return
    state.mark_ready()
    if state.worker is None:
        log.info(READY_MESSAGE)
    else:  # the supervisor says it once every worker is
        log.info("worker %d: every configured engine is loaded", state.worker.index)


def llm_models_url(config: Config) -> str | None:
    """``{base_url}/models`` of the configured OpenAI-compatible LLM (None without one)."""
    llm = config.llm
    if isinstance(llm, OpenAIChatLLM):
        suffix = "/chat/completions"
    elif isinstance(llm, OpenAIResponsesLLM):
        suffix = "/responses"
    else:
        return None
    url = llm.url.rstrip("/")
    base = url.removesuffix(suffix) if url.endswith(suffix) else url.rsplit("/", 1)[0]
    return f"{base}/models"


async def probe_llm(config: Config, *, timeout: float = PROBE_TIMEOUT) -> bool:
    """GET the LLM's ``/models`` once; log one warning naming the URL when it cannot be
    reached (connection refused, timeout, a 5xx answer). Any other answer (a 404 or a 401
    too) means the server is there. True when reachable (or nothing to probe)."""
    url = llm_models_url(config)
    if url is None:
        return True
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        reason = "timed out" if isinstance(exc, httpx.TimeoutException) else repr(exc)
        log.warning("the LLM at %s is unreachable (%s): turns fail until it is up", url, reason)
        return False
    if response.status_code >= 500:
        log.warning(
            "the LLM at %s answers HTTP %d: turns will fail until it recovers",
            url,
            response.status_code,
        )
        return False
    return True


async def _probe(state: AppState) -> None:
    """:func:`probe_llm`, its answer kept for the status page (``state.llm_reachable``)."""
    if llm_models_url(state.config) is not None:
        state.llm_reachable = await probe_llm(state.config)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    state: AppState = app.state.echokit
    tasks = [asyncio.create_task(load_engines(state), name="echokit-load-engines")]
    if state.probe_llm:
        tasks.append(asyncio.create_task(_probe(state), name="echokit-probe-llm"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await state.aclose()


class Server(uvicorn.Server):
    """uvicorn's server with the drain on the first SIGTERM/SIGINT, stopping by itself when
    the engines cannot be loaded. A worker of ``serve --workers`` (``state.worker`` set)
    listens on nothing: its connections come from the supervisor over its channel
    (:mod:`echokit_fast.server.workers`)."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state
        self.server_state = self.edge = edge.EdgeState(state.config.limits)
        if state.worker is not None:  # the cap is shared out among the workers
            share = math.ceil(self.edge.max_connections / state.worker.count)
            self.edge.max_connections = share
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._channel: workers.Channel | None = None
        self._adopting: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        edge.fit_open_files(self.edge)
        edge.report_accept_errors(self._loop, self.edge)
        spec = self.state.worker
        await super().startup(sockets=[] if spec is not None else sockets)
        if spec is not None and self.started:
            self._channel = workers.Channel(socket.socket(fileno=spec.fd))
            self._loop.add_reader(self._channel.sock, self._on_channel)
            self._adopting.add(asyncio.create_task(self._report_ready()))

    async def _report_ready(self) -> None:
        await self.state.wait_ready()
        if self.state.load_error is None and self._channel is not None:
            await self._channel.send(workers.READY)

    def _on_channel(self) -> None:
        """The supervisor's messages: connections to serve, whether every worker is ready;
        its end closed (it is gone): drain."""
        assert self._channel is not None and self._loop is not None
        while True:
            try:
                got = self._channel.receive()
            except EOFError:
                self._loop.remove_reader(self._channel.sock)
                if not self._draining:
                    log.warning("the supervisor is gone: draining")
                    self.handle_exit(signal.SIGTERM, None)
                return
            if got is None:
                return
            message, conn = got
            if conn is not None and message[:1] == workers.CONNECTION:
                self._adopt(conn, message[1:])
            elif conn is not None:
                conn.close()
            elif message in (workers.ALL_READY, workers.NOT_ALL_READY):
                self.state.peers_ready = message == workers.ALL_READY

    def _adopt(self, conn: socket.socket, head: bytes) -> None:
        """Serve `conn` as if this server had accepted it, `head` its first bytes."""
        assert self._loop is not None
        protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        protocol.prefix = head
        conn.setblocking(False)
        task = self._loop.create_task(self._loop.connect_accepted_socket(lambda: protocol, conn))
        self._adopting.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[Any]) -> None:
        self._adopting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a handed connection could not be served", exc_info=task.exception())

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:  # a second signal: uvicorn's way (SIGINT exits at once)
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("%s: draining (new connections refused)", signal.Signals(sig).name)
        if self._loop is None:  # not serving yet
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.create_task(self._drain(), name="echokit-drain")

    async def _drain(self) -> None:
        try:
            self.state.start_drain()
            for server in self.servers:
                server.close()  # stop accepting; the connections stay
            if self._channel is not None and self._loop is not None:
                self._loop.remove_reader(self._channel.sock)  # a worker: none handed on
            if self.state.sessions is not None:
                await self.state.sessions.drain(self.state.drain_timeout)
        finally:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.state.load_error is not None:
            return True
        return await super().on_tick(counter)


def check_tls(cert: str, key: str) -> tuple[str, str]:
    """`cert` and `key` when they load as a TLS server's certificate chain and private key
    (PEM), else ValueError naming the file and what is wrong -- at start-up, not at the first
    handshake."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):
            raise ValueError(f"{flag} {path}: no such file")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{flag} {path}: not readable by this user")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # an encrypted key would prompt on the terminal: refuse it instead
        context.load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, ValueError, TypeError) as exc:
        raise ValueError(
            f"--tls-cert {cert} / --tls-key {key}: cannot load them as a PEM certificate "
            f"chain and its unencrypted private key ({exc})"
        ) from None
    return cert, key


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted; give an unencrypted one")


def uvicorn_config(
    app: Starlette,
    state: AppState,
    host: str,
    port: int,
    *,
    tls: tuple[str, str] | None = None,
) -> uvicorn.Config:
    """uvicorn's configuration of `app` as ``serve`` runs it: the protocols of
    :mod:`echokit_fast.server.edge`, uvicorn's own knobs for the ``[limits]`` it has one
    for, and HTTPS/WSS with `tls` (certificate file, key file: :func:`check_tls`). Not
    ``limit_concurrency``: the edge's caps replace it (why: edge.py)."""
    limits = state.config.limits
    cert, key = tls if tls is not None else (None, None)
    return uvicorn.Config(
        app if state.worker is None else workers.close_connections(app),
        host=host,
        port=port,
        log_config=None,  # echokit_fast.server.logging configured every logger
        http=edge.EdgeHTTP,
        ws=edge.EdgeWebSocket,
        # permessage-deflate must stay off: the EchoKit firmware rejects compressed frames.
        ws_per_message_deflate=False,
        lifespan="on",
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # a float works
        h11_max_incomplete_event_size=limits.max_head_bytes,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )


def serve(
    state: AppState,
    app: Starlette,
    host: str,
    port: int,
    *,
    tls: tuple[str, str] | None = None,
) -> int:
    """Run `app` until a signal (drained: exit status 0) or a failed start-up (1); over
    HTTPS/WSS with `tls` (:func:`uvicorn_config`)."""
    server = Server(uvicorn_config(app, state, host, port, tls=tls), state)
    server.run()
    return 1 if state.load_error is not None else 0

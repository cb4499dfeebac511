"""Shared fixtures: test data paths and real servers on loopback ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from engines import speaker, whisper  # noqa: F401 (fixtures: the embedded engines)
from harness import LoopbackServer
from pages import browser  # noqa: F401 (a fixture: headless Chromium, no microphone)
from standins import ASRServer, TTSServer

DATA = Path(__file__).resolve().parent / "data"


_CACHE: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """No test may reach a model hub, and the model cache (the assembled Whisper model)
    lives in a temporary folder, for this process and the servers it spawns."""
    global _CACHE
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "ECHOKIT_FAST_CACHE" not in os.environ:
        _CACHE = tempfile.mkdtemp(prefix="echokit-fast-test-cache-")
        os.environ["ECHOKIT_FAST_CACHE"] = _CACHE


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CACHE is not None:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """`serve(app, **kw) -> "127.0.0.1:PORT"` (`kw`: :func:`harness.running_server`'s); every
    server started is stopped after the test."""
    servers: list[LoopbackServer] = []

    def start(app, **kw) -> str:
        servers.append(LoopbackServer(app, **kw))
        return servers[-1].addr

    yield start
    for server in servers:  # all told at once, then waited for: their shutdowns overlap
        server.signal()
    for server in servers:
        server.join()


@pytest.fixture
def asr(serve) -> ASRServer:
    """A stand-in OpenAI-compatible ASR server on loopback (``.addr``)."""
    server = ASRServer()
    server.addr = serve(server.app)
    return server


@pytest.fixture
def tts(serve) -> TTSServer:
    """A stand-in TTS server (OpenAI and stream_gsv routes) on loopback (``.addr``)."""
    server = TTSServer()
    server.addr = serve(server.app)
    return server

"""TTS: time to first audio and total synthesis time, ours vs hibari called directly.

Same run, same text (two sentences, the shape of an LLM reply's first segments), same
voice (hibari ``heart``, 1 onnxruntime thread), per group:

* ``ours_http``: ``POST /v1/audio/stream_speech`` (gsv_tts route, ``sample_rate`` 16000 as
  EchoKit asks) to our app served by uvicorn in a separate process (as deployed; its
  engine loaded by a first request), through httpx on loopback: JSON parsing, the
  engine's worker thread, streaming resampling 24 -> 16 kHz, s16le conversion, chunked
  HTTP. ``first_audio`` stops the clock at the first body bytes; ``total`` at the last.
* ``ours_engine``: ``HibariSpeaker.speak`` in-process (no HTTP), also at 16 kHz.
* ``peer_hibari``: ``hibari.Hibari.stream(text)`` (24 kHz, its own sentence split):
  ``first_audio`` = its first sentence, ``total`` = all of it.

The ratio ours/peer within a group is the overhead of our layers on the same model.
``extra_info["x_realtime"]`` in the ``total`` group is seconds of audio per second of
wall time. Timed run:

    .venv/bin/python -m pytest benches/bench_tts.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from hibari import Hibari

from echokit_fast.audio import pcm16_to_float
from echokit_fast.backends.tts.local import engine as tts

TEXT = (
    "Sure, here is a quick answer to your question about the weather tomorrow. "
    "It will be sunny in the morning, with a few clouds and a light breeze after lunch."
)
FIRST_ROUNDS = 12
TOTAL_ROUNDS = 5


SERVER = """
import socket, sys, uvicorn
from echokit_fast.server.app import create_app
sock = socket.socket(fileno=int(sys.argv[1]))
uvicorn.Server(uvicorn.Config(create_app(), log_level="warning")).run(sockets=[sock])
"""


@contextmanager
def server_process() -> Iterator[str]:
    """`echokit-fast`'s app (embedded default config) served by uvicorn in its own
    process, as deployed; the socket is bound here, so requests queue until it is up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(sock.fileno())], pass_fds=[sock.fileno()]
    )
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def engine():
    e = tts.HibariSpeaker(voice="heart", threads=1)
    yield e
    e.close()


@pytest.fixture(scope="module")
def peer():
    h = Hibari(voice="heart", threads=1)
    h("Warm up.")  # loads its G2P, as our engine does at load
    return h


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def url(client):
    with server_process() as addr:
        url = f"http://{addr}/v1/audio/stream_speech"
        assert client.post(url, json=BODY).status_code == 200  # loads the engine
        yield url


BODY = {"speaker": "heart", "input": TEXT, "sample_rate": 16000}


# --- time to first audio ---------------------------------------------------------------


@pytest.mark.benchmark(group="tts_first_audio")
def test_first_audio_ours_http(benchmark, url, client):
    open_responses: list[tuple[httpx.Response, Iterator[bytes]]] = []

    def first_bytes() -> bytes:
        r = client.send(client.build_request("POST", url, json=BODY), stream=True)
        chunks = r.iter_raw()
        open_responses.append((r, chunks))
        return next(chunks)

    def finish(*_args) -> None:  # untimed: let the rest of the reply arrive, then close
        while open_responses:
            r, chunks = open_responses.pop()
            assert sum(len(c) for c in chunks) > 0
            r.close()

    first = benchmark.pedantic(
        first_bytes, teardown=finish, rounds=FIRST_ROUNDS, warmup_rounds=1, iterations=1
    )
    finish()
    assert len(first) >= 2


@pytest.mark.benchmark(group="tts_first_audio")
def test_first_audio_ours_engine(benchmark, engine):
    async def first_chunk() -> np.ndarray:
        stream = engine.speak(TEXT, sample_rate=16000)
        try:
            return await anext(stream)
        finally:
            await stream.aclose()

    def drain(*_args) -> None:  # untimed: the piece synthesised ahead is not left running
        asyncio.run(engine.drain())

    chunk = benchmark.pedantic(
        lambda: asyncio.run(first_chunk()),
        teardown=drain,
        rounds=FIRST_ROUNDS,
        warmup_rounds=1,
        iterations=1,
    )
    drain()
    assert len(chunk) > 16000 // 2 and float(np.abs(chunk).max()) > 0.05


@pytest.mark.benchmark(group="tts_first_audio")
def test_first_audio_peer_hibari(benchmark, peer):
    chunk = benchmark.pedantic(
        lambda: next(peer.stream(TEXT, seed=0)), rounds=FIRST_ROUNDS, warmup_rounds=1
    )
    assert len(chunk) > 24000 // 2 and float(np.abs(chunk).max()) > 0.05


# --- whole text, real-time factor -----------------------------------------------------


@pytest.mark.benchmark(group="tts_total")
def test_total_ours_http(benchmark, url, client):
    data = benchmark.pedantic(
        lambda: client.post(url, json=BODY).content, rounds=TOTAL_ROUNDS, warmup_rounds=1
    )
    seconds = len(pcm16_to_float(data)) / 16000
    assert 5.0 < seconds < 20.0
    if benchmark.stats:
        benchmark.extra_info["audio_s"] = round(seconds, 3)
        benchmark.extra_info["x_realtime"] = round(seconds / benchmark.stats.stats.mean, 1)


@pytest.mark.benchmark(group="tts_total")
def test_total_ours_engine(benchmark, engine):
    async def whole() -> np.ndarray:
        return np.concatenate([c async for c in engine.speak(TEXT, sample_rate=16000)])

    audio = benchmark.pedantic(
        lambda: asyncio.run(whole()), rounds=TOTAL_ROUNDS, warmup_rounds=1, iterations=1
    )
    seconds = len(audio) / 16000
    assert 5.0 < seconds < 20.0
    if benchmark.stats:
        benchmark.extra_info["audio_s"] = round(seconds, 3)
        benchmark.extra_info["x_realtime"] = round(seconds / benchmark.stats.stats.mean, 1)


@pytest.mark.benchmark(group="tts_total")
def test_total_peer_hibari(benchmark, peer):
    audio = benchmark.pedantic(lambda: peer(TEXT, seed=0), rounds=TOTAL_ROUNDS, warmup_rounds=1)
    seconds = len(audio) / 24000
    assert 5.0 < seconds < 20.0
    if benchmark.stats:
        benchmark.extra_info["audio_s"] = round(seconds, 3)
        benchmark.extra_info["x_realtime"] = round(seconds / benchmark.stats.stats.mean, 1)

"""The in-process LLM against llama-cpp-python's own OpenAI server, on the same GGUF.

A random-weight llama (tests/tiny_llm.py, 512 dims, 8 layers: big enough that a token costs
real work, small enough to write in a second) answers the same question, at temperature 0,
through:

* **ours, in-process**: the engine a device turn uses (``LocalLLMEngine.stream``);
* **ours, HTTP**: ``POST /v1/chat/completions`` of ``echokit-fast serve``'s app, streamed,
  through the ``openai`` client;
* **peer**: ``python -m llama_cpp.server`` (the same llama-cpp-python build), streamed, through
  the ``openai`` client.

Reported: the time to the first token and the decode rate (tokens/s after the first), medians
over the runs; and a device turn's latency (``Text`` sent -> first reply audio frame, TTS faked)
with the local LLM vs the same model behind the peer's HTTP server (``openai_chat``). The three
answers are checked to be the same text (one llama.cpp, greedy decoding).

    .venv/bin/python -m pytest benches/bench_llm.py -s            # figures: --llm-runs 7
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from device_fakes import Device, FakeSpeaker, FakeTranscriber, name
from harness import free_port, running_server
from tiny_llm import write_tiny_llama

from echokit_fast.backends import registry
from echokit_fast.backends.base import Backends
from echokit_fast.backends.llm.local import LocalLLM
from echokit_fast.backends.llm.local.chat import LocalChatBackend
from echokit_fast.backends.llm.local.engine import LocalLLMEngine, default_threads, from_config
from echokit_fast.config import default_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]
TOKENS = 64
CONTEXT = 2048
THREADS = default_threads()
#: greedy, with llama_cpp.server's default repeat penalty said explicitly to both servers
SAMPLING = {"temperature": 0.0, "repeat_penalty": 1.1}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llm") / "bench.gguf"
    return write_tiny_llama(path, dims=512, layers=8, heads=8, context=CONTEXT)


@pytest.fixture(scope="module")
def engine(model: Path) -> Iterator[LocalLLMEngine]:
    cfg = LocalLLM(
        model=str(model),
        context=CONTEXT,
        threads=THREADS,
        max_tokens=TOKENS,
        temperature=SAMPLING["temperature"],
        extra={"repeat_penalty": SAMPLING["repeat_penalty"]},
    )
    e = from_config(cfg)
    yield e
    e.close()


@pytest.fixture(scope="module")
def peer(model: Path) -> Iterator[str]:
    """``python -m llama_cpp.server`` on ``model``: its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(CONTEXT),
            "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    seen = b""
    assert proc.stdout is not None
    for line in proc.stdout:
        seen += line
        if b"Uvicorn running" in line:
            break
    else:
        raise AssertionError(f"llama_cpp.server did not start:\n{seen.decode(errors='replace')}")
    watchdog.cancel()
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ours(engine: LocalLLMEngine) -> Iterator[str]:
    """Our app serving ``engine`` (``/v1/chat/completions``): its base URL."""
    config = default_config(llm_model=engine.cfg.model)
    state = AppState(config)
    state.llm = engine
    state.ready = True
    state.backends = Backends(FakeTranscriber(), FakeSpeaker(), lambda _id: None)
    with running_server(create_app(state=state)) as addr:
        yield f"http://{addr}/v1"


def runs(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--llm-runs"))


def in_process(engine: LocalLLMEngine) -> tuple[float, float, str]:
    async def main() -> tuple[float, float, str]:
        started = time.perf_counter()
        answer = engine.stream({"messages": QUESTION, "max_tokens": TOKENS, **SAMPLING})
        deltas = [
            (c["choices"][0]["delta"].get("content"), time.perf_counter()) async for c in answer
        ]
        return _timed_pairs(deltas, started)

    return asyncio.run(main())


def _timed_pairs(
    deltas: list[tuple[str | None, float]], started: float
) -> tuple[float, float, str]:
    stamped = [(t, at) for t, at in deltas if t]
    assert len(stamped) > 1
    first, end = stamped[0][1], stamped[-1][1]
    return first - started, (len(stamped) - 1) / (end - first), "".join(t for t, _ in stamped)


def over_http(base_url: str) -> tuple[float, float, str]:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="bench",
        messages=QUESTION,
        max_tokens=TOKENS,
        temperature=SAMPLING["temperature"],
        extra_body={"repeat_penalty": SAMPLING["repeat_penalty"]},
        stream=True,
    )
    deltas = [
        (c.choices[0].delta.content if c.choices else None, time.perf_counter()) for c in stream
    ]
    return _timed_pairs(deltas, started)


def _median(samples: list[tuple[float, float, str]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def test_first_token_and_decode_rate_vs_llama_cpp_server(request, engine, ours, peer) -> None:
    n = runs(request)
    for fn in (lambda: in_process(engine), lambda: over_http(ours), lambda: over_http(peer)):
        fn()  # warm-up (the first prompt evaluation, the HTTP connections)
    results = {
        "ours, in-process": [in_process(engine) for _ in range(n)],
        "ours, /v1/chat/completions": [over_http(ours) for _ in range(n)],
        "llama_cpp.server": [over_http(peer) for _ in range(n)],
    }
    texts = {what: {s[2] for s in samples} for what, samples in results.items()}
    (answer,) = texts["llama_cpp.server"]
    assert all(t == {answer} for t in texts.values()), texts  # one llama.cpp, greedy: one answer
    peer_first, peer_rate = _median(results["llama_cpp.server"])
    print(f"\nLLM ({THREADS} threads, {TOKENS} tokens, {n} runs; medians)")
    for what, samples in results.items():
        first, rate = _median(samples)
        print(
            f"  {what:28s} first token {first * 1000:7.1f} ms ({first / peer_first:.2f}x)  "
            f"decode {rate:7.1f} tok/s ({rate / peer_rate:.2f}x)"
        )


def _device_turn(state: AppState, n: int) -> tuple[float, str]:
    """(median seconds from a device's ``Text`` to its first reply audio frame, the text it
    was told)."""
    state.record_dir = Path("/nonexistent")
    with running_server(create_app(state=state)) as addr:

        async def turn(i: int) -> tuple[float, str]:
            d = await Device.open(addr, f"bench{i:03d}", opus=True)
            started = time.perf_counter()
            await d.command("Text", input=QUESTION[0]["content"])
            first, said = None, []
            while True:
                ev = await d.recv(timeout=60)
                if first is None and name(ev) == "AudioChunk":
                    first = time.perf_counter() - started
                if name(ev) == "StartAudio":
                    said.append(ev["StartAudio"]["text"])
                if name(ev) == "EndResponse":
                    break
            await d.close()
            assert first is not None
            return first, " ".join(said)

        asyncio.run(turn(0))  # warm-up
        turns = [asyncio.run(turn(i)) for i in range(1, n + 1)]
    (said,) = {s for _, s in turns}
    return statistics.median(t for t, _ in turns), said


def test_device_turn_local_vs_the_same_model_over_http(request, engine, peer) -> None:
    n = runs(request)
    remote = AppState(default_config(llm_url=peer))
    local = AppState(default_config(llm_model=engine.cfg.model))
    prompts = {"sys_prompts": remote.config.llm.sys_prompts}  # the embedded default's prompt
    backend = LocalChatBackend(engine.cfg.model_copy(update=prompts), engine)
    local.backends = Backends(FakeTranscriber(), FakeSpeaker(), backend.conversation)
    # the same sampling and length as the local engine's
    extra = {**SAMPLING, "max_tokens": TOKENS}
    section = remote.config.llm.model_copy(update={"extra": extra})
    http = registry.get("llm", "openai_chat").build(section, registry.Needs())
    remote.backends = Backends(FakeTranscriber(), FakeSpeaker(), http)
    in_proc, said_local = _device_turn(local, n)
    over, said_http = _device_turn(remote, n)
    assert said_local == said_http and said_local  # the same answer, spoken the same way
    print(
        f"\ndevice turn, Text -> first audio (median of {n}): local {in_proc * 1000:.1f} ms, "
        f"llama_cpp.server over HTTP {over * 1000:.1f} ms ({in_proc / over:.2f}x)"
    )

"""Capacity: many virtual devices holding conversations with one server at once.

``echokit-fast serve`` runs as the real CLI in a child process with the embedded Silero VAD and
instant stand-in backends (OpenAI-compatible ASR, LLM and streaming TTS servers that answer at
once), so what is loaded is the server itself: sockets, VAD on every device's audio, turn
orchestration, Opus encoding with vowels, event encoding. ``echokit-vdev --devices N`` (firmware/)
plays N EchoKit boxes: real-time microphone pace, 8192-sample frames, playback waits.

Measured per device turn: the time from the frame carrying the last speech sample to the first
reply audio (this includes the server's end-of-turn hangover of ~0.5 s of silence, i.e. what a
user waits for). Two rounds of conversations run; the server's RSS is read before the first,
between and after them (growth per turn = after - between, divided by the second round's turns).

    .venv/bin/python -m pytest benches/bench_load.py -s --benchmark-enable --load-devices 200

The suite runs it once with N = 20 (errors must be 0; it asserts no sign of a leak).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from harness import free_port, running_server, serve_process  # noqa: E402
from standins import ASRServer, ChatServer, TTSServer  # noqa: E402
from vdev import vdev  # noqa: E402

TURNS = 2  # per device and round
ANSWER = "Sure. Here is a short answer for you, spoken in two parts."
#: device boots are spread over this long (about one turn), as real users do not talk in
#: lockstep; every device then holds its turns back to back
SPREAD_S = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, load_devices):
    chat, stt, speech = ChatServer(), ASRServer("hello there"), TTSServer()
    chat.default.deltas = [ANSWER]
    with (
        running_server(chat.app) as chat_addr,
        running_server(stt.app) as asr_addr,
        running_server(speech.app) as tts_addr,
    ):
        addr = f"127.0.0.1:{free_port()}"
        cfg = tmp_path_factory.mktemp("load-cfg") / "config.toml"
        cfg.write_text(
            f"""
addr = "{addr}"

[asr]
platform = "openai"
url = "http://{asr_addr}/v1/audio/transcriptions"

[tts]
platform = "stream_gsv"
url = "http://{tts_addr}/v1/audio/stream_speech"
speaker = "load"

[llm]
platform = "openai_chat"
url = "http://{chat_addr}/v1/chat/completions"
history = 5

[limits]  # every device connects from 127.0.0.1, two sockets each while one takes over
max_connections = {max(1000, 4 * load_devices)}
max_connections_per_ip = {max(1000, 4 * load_devices)}
"""
        )
        with serve_process(str(cfg)) as proc:
            yield addr, proc


def _round(addr: str, question: Path, out: Path, first: bool, devices: int) -> list[dict]:
    stagger = f"{SPREAD_S / devices:.4f}"
    args = ("--devices", str(devices), "--stagger", stagger, "--timeout", "60")
    run = vdev(addr, *[question] * TURNS, out=out, args=args + (() if first else ("--no-hello",)))
    failed = [d for d in run.summary["devices"] if not d["ok"]]
    assert run.returncode == 0 and not failed, (
        f"{len(failed)} of {devices} devices failed: {json.dumps(failed[:3])[:3000]}"
    )
    return [t for d in run.summary["devices"] for t in d["turns"]]


def test_devices_talking_at_once_ours(benchmark, server, question, tmp_path, load_devices) -> None:
    addr, proc = server
    n = load_devices
    benchmark.group = f"load: {n} virtual devices, audible end of speech -> first audio"
    rss = [proc.rss_bytes()]
    turns: list[dict] = []

    def load() -> None:
        turns.extend(_round(addr, question, tmp_path / "a", True, n))
        rss.append(proc.rss_bytes())
        turns.extend(_round(addr, question, tmp_path / "b", False, n))
        rss.append(proc.rss_bytes())

    benchmark.pedantic(load, rounds=1, iterations=1)
    latency = np.array([t["first_audio_latency"] for t in turns]) * 1e3
    assert len(latency) == 2 * n * TURNS and np.all(latency > 0)
    growth = (rss[2] - rss[1]) / (n * TURNS)
    info = {
        "devices": n,
        "turns": len(latency),
        "errors": 0,
        "p50_ms": round(float(np.percentile(latency, 50)), 1),
        "p95_ms": round(float(np.percentile(latency, 95)), 1),
        "max_ms": round(float(latency.max()), 1),
        "rss_mib": [round(r / 2**20, 1) for r in rss],
        "rss_growth_kib_per_turn": round(growth / 1024, 1),
    }
    benchmark.extra_info.update(info)
    print(f"\nload: {json.dumps(info)}")
    # A leak of even a small buffer per turn shows up here; allocator noise stays far below.
    assert growth < 256 * 1024, info

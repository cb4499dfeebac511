"""Device server overhead per turn, with instant in-process backends.

A real server on loopback and a websockets client speaking the device protocol
(opus + vowel + stream_asr, like the firmware). The backends answer at once
(tests/device_fakes.py), so what is timed is the server's own work: VAD,
orchestration, Opus encoding with vowels, event encoding and the socket.

* text turn: `Text` sent -> first audio event received;
* voice turn: last speech frame sent -> first audio event received. Silence after
  the speech is sent at full speed, so this excludes the end-of-turn hangover
  (~0.5 s of real time on a real device) and is pure processing.

Target (issue 4): server overhead <= 20 ms p95 on 2 cores. There is no peer in
the same run (the Rust reference is not available here); p50/p95 go to
extra_info and the report.
"""

from __future__ import annotations

import asyncio
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from device_fakes import (  # noqa: E402
    Conversations,
    Device,
    FakeSpeaker,
    FakeTranscriber,
    default_script,
    name,
)
from harness import running_server  # noqa: E402

from echokit_fast.backends.base import Backends  # noqa: E402
from echokit_fast.config import default_config  # noqa: E402
from echokit_fast.server.app import create_app  # noqa: E402
from echokit_fast.server.state import AppState  # noqa: E402

FRAME = 16384  # the firmware's 512 ms upload frame
AUDIO = ("AudioChunk", "AudioChunkWithVowel")


def _speech() -> bytes:
    with wave.open(str(TESTS / "data" / "vad_fixture_hello16k.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return pcm[2 * 4096 : 2 * 70624]  # 256 ms pre-roll .. the end of the speech


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    ctx = AppState(default_config())
    ctx.backends = Backends(FakeTranscriber(), FakeSpeaker(), Conversations(default_script))
    ctx.record_dir = tmp_path_factory.mktemp("record")
    loop = asyncio.new_event_loop()
    with running_server(create_app(state=ctx)) as addr:
        dev = loop.run_until_complete(
            Device.open(addr, "bench", opus=True, vowel=True, stream_asr=True)
        )
        yield loop, dev
        loop.run_until_complete(dev.close())
    loop.close()


async def _first_audio(dev: Device) -> None:
    while name(await dev.recv()) not in AUDIO:
        pass


def _percentiles(benchmark, times: list[float]) -> None:
    ms = np.array(times) * 1e3
    benchmark.extra_info["p50_ms"] = round(float(np.percentile(ms, 50)), 2)
    benchmark.extra_info["p95_ms"] = round(float(np.percentile(ms, 95)), 2)


def test_text_turn_to_first_audio_ours(benchmark, device):
    loop, dev = device
    benchmark.group = "device: Text -> first audio (instant backends)"
    times: list[float] = []

    async def turn() -> None:
        t0 = loop.time()
        await dev.command("Text", input="hello there")
        await _first_audio(dev)
        times.append(loop.time() - t0)
        await dev.until("EndResponse")

    benchmark.pedantic(lambda: loop.run_until_complete(turn()), rounds=30, warmup_rounds=2)
    _percentiles(benchmark, times)
    assert times and max(times) < 5.0  # one round when the suite runs benches untimed


def test_voice_turn_last_frame_to_first_audio_ours(benchmark, device):
    loop, dev = device
    benchmark.group = "device: last speech frame -> first audio (instant backends)"
    speech = _speech()
    cut = len(speech) - (len(speech) % FRAME or FRAME)  # the last frame holds the speech's end
    head, last = speech[:cut], speech[cut:]
    silence = bytes(FRAME * 3)
    times: list[float] = []

    async def setup_turn() -> None:
        await dev.command("StartChat")
        await dev.audio(head, FRAME)

    async def turn() -> None:
        t0 = loop.time()
        await dev.audio(last + silence, FRAME)
        await _first_audio(dev)
        times.append(loop.time() - t0)
        events = await dev.until("EndResponse")
        assert any(name(e) == "EndAudio" for e in events)

    benchmark.pedantic(
        lambda: loop.run_until_complete(turn()),
        setup=lambda: loop.run_until_complete(setup_turn()),
        rounds=15,
        warmup_rounds=1,
    )
    _percentiles(benchmark, times)
    assert times and max(times) < 5.0

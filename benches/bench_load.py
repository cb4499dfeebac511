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

``--load-workers N`` serves with ``serve --workers N`` (the CPU and RSS figures then sum the
supervisor and its workers).

``xiaozhi-vdev --devices N`` plays N xiaozhi boards against the same server the same way.

The suite runs each once with N = 20 (errors must be 0; it asserts no sign of a leak).
"""

from __future__ import annotations

import json
import resource
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from harness import free_port, serve_process  # noqa: E402
from instant import instant_backends, limits  # noqa: E402
from vdev import vdev, xiaozhi_vdev  # noqa: E402

TURNS = 2  # per device and round
#: device boots are spread over this long (about one turn), as real users do not talk in
#: lockstep; every device then holds its turns back to back
SPREAD_S = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, load_devices, request):
    with instant_backends() as backends:
        addr = f"127.0.0.1:{free_port()}"
        cfg = tmp_path_factory.mktemp("load-cfg") / "config.toml"
        # two sockets a device while one takes over
        cfg.write_text(f'addr = "{addr}"\n{backends.sections}{limits(max(1000, 4 * load_devices))}')
        workers = request.config.getoption("--load-workers")
        with serve_process(str(cfg), "--workers", str(workers)) as proc:
            yield addr, proc


def _round(run, question: Path, out: Path, devices: int, *args: str) -> list[dict]:
    """One round: every device holds TURNS turns; their records (none may fail)."""
    stagger = f"{SPREAD_S / devices:.4f}"
    options = ("--devices", str(devices), "--stagger", stagger, "--timeout", "60", *args)
    result = run(*[question] * TURNS, out=out, args=options)
    failed = [d for d in result.summary["devices"] if not d["ok"]]
    assert result.returncode == 0 and not failed, (
        f"{len(failed)} of {devices} devices failed: {json.dumps(failed[:3])[:3000]}"
    )
    return [t for d in result.summary["devices"] for t in d["turns"]]


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _measure(benchmark, proc, n: int, rounds) -> tuple[dict, list[dict]]:
    """Runs the two rounds once under the benchmark; the figures (printed, kept in the
    benchmark's extra info) and every turn's record."""
    rss = [proc.rss_bytes()]
    cpu0 = proc.cpu_seconds()
    # the stand-ins run in this process; the devices are children that have ended by the
    # time a round returns
    own0, devices0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    turns: list[dict] = []

    def load() -> None:
        for one in rounds:
            turns.extend(one())
            rss.append(proc.rss_bytes())

    benchmark.pedantic(load, rounds=1, iterations=1)
    cpu = proc.cpu_seconds() - cpu0
    own, devices = _cpu(resource.RUSAGE_SELF) - own0, _cpu(resource.RUSAGE_CHILDREN) - devices0
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
        # the server's CPU over both rounds (the devices and stand-ins are other processes)
        "server_cpu_s": round(cpu, 1),
        "server_cpu_ms_per_turn": round(cpu * 1e3 / len(latency), 1),
        # what shares the cores with it: the stand-ins (and this harness), the devices
        "standins_cpu_s": round(own, 1),
        "devices_cpu_s": round(devices, 1),
    }
    benchmark.extra_info.update(info)
    # A leak of even a small buffer per turn shows up here; allocator noise stays far below.
    assert growth < 256 * 1024, info
    return info, turns


def test_devices_talking_at_once_ours(benchmark, server, question, tmp_path, load_devices) -> None:
    addr, proc = server
    n = load_devices
    benchmark.group = f"load: {n} virtual devices, audible end of speech -> first audio"
    run = partial(vdev, addr)
    info, _ = _measure(
        benchmark,
        proc,
        n,
        [
            lambda: _round(run, question, tmp_path / "a", n),
            lambda: _round(run, question, tmp_path / "b", n, "--no-hello"),
        ],
    )
    print(f"\nload: {json.dumps(info)}")


def test_xiaozhi_boards_talking_at_once_ours(
    benchmark, server, question, tmp_path, load_devices
) -> None:
    """The same load from xiaozhi boards (``xiaozhi-vdev --devices N``): OTA, hello, auto
    listening with 60 ms Opus packets streamed from ``listen start`` on (silence included),
    the paced 24 kHz downlink played by each board's loudspeaker model. Both rounds boot the
    boards again (OTA call, new socket), as a board does after its idle close."""
    addr, proc = server
    n = load_devices
    benchmark.group = f"load: {n} xiaozhi boards, audible end of speech -> first audio"
    run = partial(xiaozhi_vdev, addr)
    info, turns = _measure(
        benchmark,
        proc,
        n,
        [
            lambda: _round(run, question, tmp_path / "a", n),
            lambda: _round(run, question, tmp_path / "b", n),
        ],
    )
    # The server paces: no board's 43-packet queue overflows, even under load.
    assert sum(t["pacing"]["dropped_full"] for t in turns) == 0
    info["underruns"] = sum(t["pacing"]["underruns"] for t in turns)
    # where the wait goes: audible end -> `stt` (end of turn + ASR), `stt` -> first audio
    stt = np.array([t["t_stt"] - t["t_audible_end"] for t in turns]) * 1e3
    info["stt_p50_ms"] = round(float(np.percentile(stt, 50)), 1)
    print(f"\nxiaozhi load: {json.dumps(info)}")


def test_xiaozhi_abort_stops_the_audio(benchmark, server, question, tmp_path) -> None:
    """How fast a board's abort (its button, 100 ms into the reply's audio) silences the
    reply: 5 boards, 2 turns each; from the abort sent to `tts stop`, and the packets that
    still came after it."""
    addr, _ = server
    benchmark.group = "xiaozhi: abort sent -> tts stop"
    turns: list[dict] = []
    run = partial(xiaozhi_vdev, addr)

    def go() -> None:
        turns.extend(_round(run, question, tmp_path / "abort", 5, "--abort-after", "100"))

    benchmark.pedantic(go, rounds=1, iterations=1)
    aborts = [t["abort"] for t in turns]
    assert len(aborts) == 5 * TURNS and all(a and a["tts_stop_after"] is not None for a in aborts)
    stop = np.array([a["tts_stop_after"] for a in aborts]) * 1e3
    info = {
        "aborts": len(aborts),
        "stop_p50_ms": round(float(np.percentile(stop, 50)), 1),
        "stop_max_ms": round(float(stop.max()), 1),
        "packets_after_max": max(a["packets_after"] for a in aborts),
    }
    benchmark.extra_info.update(info)
    print(f"\nxiaozhi abort: {json.dumps(info)}")

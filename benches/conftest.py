"""Options of the bench suites (pytest loads this for any run that names benches/)."""

from __future__ import annotations

import os
import sys
import wave
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from engines import speaker, whisper  # noqa: E402, F401 (fixtures: the embedded engines)

#: the Rust server we replace, where the project's notes keep a build of it
REFERENCE = TESTS.parent.parent / "shared" / "reference" / "echokit_server"


def _counts(value: str) -> list[int]:
    counts = sorted({int(v) for v in value.split(",")})
    if not counts or counts[0] < 1:
        raise ValueError(value)
    return counts


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--load-devices",
        type=int,
        default=int(os.environ.get("ECHOKIT_LOAD_DEVICES", "20")),
        help="virtual devices in benches/bench_load.py (default 20, or $ECHOKIT_LOAD_DEVICES)",
    )
    parser.addoption(
        "--load-workers",
        type=int,
        default=1,
        help="benches/bench_load.py: serve --workers N (default 1)",
    )
    parser.addoption(
        "--turn-all",
        action="store_true",
        help="benches/bench_turn.py: every utterance (24 + 24), not only the first pair",
    )
    parser.addoption(
        "--latency-all",
        action="store_true",
        help="benches/bench_latency.py: every question (20), not only the first two",
    )
    parser.addoption(
        "--latency-llm-delay",
        type=float,
        default=0.0,
        help="benches/bench_latency.py: the LLM stand-in's time to its first token, in seconds;"
        " above 0 the two servers are speculative replies on and off (default 0: instant,"
        " sized vs full encoder window)",
    )
    parser.addoption(
        "--llm-runs",
        type=int,
        default=2,
        help="benches/bench_llm.py: timed runs per path (2; the recorded figures: 7)",
    )
    parser.addoption(
        "--opus-all",
        action="store_true",
        help="benches/bench_opus_complexity.py: every complexity, not only ours and the default",
    )
    ref = parser.getgroup("reference", "benches/bench_reference.py")
    ref.addoption(
        "--reference-server",
        default=os.environ.get("ECHOKIT_REFERENCE_SERVER", str(REFERENCE)),
        help="the echokit_server binary (default ../shared/reference/echokit_server)",
    )
    ref.addoption(
        "--reference-devices",
        type=_counts,
        default=[1, 5],
        help="comma-separated device counts, the smallest one the floor (1,5; the recorded "
        "figures: 1,20,50,100,200)",
    )
    ref.addoption("--reference-repeats", type=int, default=1, help="runs per server and count (1)")
    soak = parser.getgroup("soak", "benches/bench_soak.py (5 s unless --soak or --soak-quick)")
    soak.addoption("--soak", action="store_true", help="run the soak: 5 minutes by default")
    soak.addoption("--soak-quick", action="store_true", help="run a short soak (30 s)")
    soak.addoption("--soak-duration", type=float, default=None, help="seconds of soak")
    soak.addoption("--soak-devices", type=int, default=100, help="virtual devices (100)")
    soak.addoption("--soak-seed", type=int, default=1, help="the fuzzers' random seed (1)")


@pytest.fixture(scope="session")
def load_devices(request: pytest.FixtureRequest) -> int:
    n = request.config.getoption("--load-devices")
    if n < 1:
        raise pytest.UsageError(f"--load-devices must be >= 1, got {n}")
    return n


@pytest.fixture(scope="session")
def question(tmp_path_factory) -> Path:
    """What the virtual devices say (bench_load, bench_soak): real speech (the VAD fixture),
    cut right after its last word, so the frame carrying the last WAV sample is the last
    speech frame."""
    with wave.open(str(TESTS / "data" / "vad_fixture_hello16k.wav")) as w:
        pcm = w.readframes(w.getnframes())
    path = tmp_path_factory.mktemp("load") / "question.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm[: 2 * 70624])
    return path

"""Side by side with the Rust server echokit-fast replaces (echokit_server 0.3.2).

Both servers run the same ``config.toml`` (OpenAI-compatible ASR, ``openai_chat`` LLM and
``stream_gsv`` TTS, all instant stand-ins in the pytest process, so neither waits on a model)
with their built-in Silero VAD and fixed-silence end of turn, and the same ``echokit-vdev``
devices talk to them: real-time microphone pace, Opus + vowels + ``stream_asr`` as the firmware
asks, two turns per device. For each device count the servers take turns (reference, ours,
reference, ours, ... ``--reference-repeats`` times), each run on a freshly started process, so
a drift of the machine hits both alike. Per server and count:

- CPU seconds of the server process per completed turn (``/proc``: user + system, from before
  the devices connect to after the last one left), and its RSS before and after;
- end of speech -> first reply audio as the device measures it (from the audible end of the
  WAV's speech to the first audio event), p50 and p95;
- the devices that failed (the firmware's own time-outs: no ``ASR`` within 10 s, and so on).

The device count a server "holds" is the largest count run with no failed device and a p95
within 100 ms of that server's own p50 at the smallest count, its floor (run 1 device first:
with a 500 ms silence rule and 512 ms frames neither server can answer within 1 s of the
audible end, so "p95 < 1 s" would hold nothing).

    .venv/bin/python -m pytest benches/bench_reference.py -s --benchmark-enable \\
        --reference-devices 1,20,50,100,200 --reference-repeats 2

The binary is ``../shared/reference/echokit_server`` beside the checkout, or
``--reference-server PATH`` / ``$ECHOKIT_REFERENCE_SERVER``. Without it the bench is skipped
and says so: it is a measurement, never a passing test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from harness import ServeProcess, free_port, serve_process  # noqa: E402
from instant import instant_backends, limits  # noqa: E402
from vdev import vdev  # noqa: E402

TURNS = 2  # per device and run
SPREAD_S = 5.0  # device boots spread over this long, as in bench_load
#: how long the reference may take to listen on its port
START_LIMIT_S = 30.0
#: a count is held while its p95 stays this close to the server's floor
HOLD_MARGIN_MS = 100.0


@dataclass
class Runs:
    """What one server did at one device count, over every repeat."""

    turns: int = 0
    failed_devices: int = 0
    devices: int = 0
    cpu_s: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)

    def figures(self) -> dict:
        lat = np.array(self.latency_ms) if self.latency_ms else np.array([np.nan])
        return {
            "turns": self.turns,
            "failed_devices": f"{self.failed_devices}/{self.devices}",
            # None: no turn completed (every device failed)
            "cpu_ms_per_turn": round(self.cpu_s * 1e3 / self.turns, 1) if self.turns else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "rss_mib": self.rss_mib,
        }


@pytest.fixture(scope="module")
def reference(request: pytest.FixtureRequest) -> Path:
    path = Path(request.config.getoption("--reference-server"))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(
            f"the reference echokit_server is not at {path} (--reference-server PATH or "
            "$ECHOKIT_REFERENCE_SERVER): nothing was measured"
        )
    return path


@pytest.fixture(scope="module")
def standins() -> Iterator[str]:
    """The three instant stand-ins; the config text both servers share (without ``addr``)."""
    with instant_backends() as backends:
        yield backends.sections


def _listening(addr: str, proc: subprocess.Popen) -> None:
    """Waits until ``addr`` accepts a connection (the reference logs no readiness line)."""
    host, port = addr.rsplit(":", 1)
    deadline = monotonic() + START_LIMIT_S
    while monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the reference exited with {proc.returncode} at start-up")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            threading.Event().wait(0.05)  # the port is not open yet: poll again
    raise AssertionError(f"the reference did not listen on {addr} within {START_LIMIT_S} s")


@contextmanager
def reference_process(binary: Path, config: str, workdir: Path) -> Iterator[ServeProcess]:
    """The reference on ``config`` (its ``record/`` folder goes into ``workdir``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.toml").write_text(config)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(binary), "config.toml"], cwd=workdir, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _listening(config.split('"')[1], proc)
        yield ServeProcess(proc, b"")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _load(server: ServeProcess, addr: str, question: Path, out: Path, n: int, runs: Runs):
    """One run: ``n`` devices, TURNS turns each, against the server at ``addr``."""
    stagger = f"{SPREAD_S / n:.4f}"
    rss0, cpu0 = server.rss_bytes(), server.cpu_seconds()
    result = vdev(
        addr,
        *[question] * TURNS,
        out=out,
        args=("--devices", str(n), "--stagger", stagger, "--timeout", "60"),
        timeout=600,
    )
    runs.cpu_s += server.cpu_seconds() - cpu0
    runs.rss_mib.append((round(rss0 / 2**20, 1), round(server.rss_bytes() / 2**20, 1)))
    devices = result.summary["devices"]
    assert len(devices) == n, result.describe()
    runs.devices += n
    runs.failed_devices += sum(not d["ok"] for d in devices)
    done = [t for d in devices for t in d["turns"] if t.get("first_audio_latency")]
    runs.turns += len(done)
    runs.latency_ms += [t["first_audio_latency"] * 1e3 for t in done]


def _holds(results: dict[int, Runs]) -> int:
    counts = sorted(results)
    floor = results[counts[0]].figures()["p50_ms"]
    held = 0
    for n in counts:
        f = results[n].figures()
        if results[n].failed_devices == 0 and f["p95_ms"] <= floor + HOLD_MARGIN_MS:
            held = n
    return held


def test_side_by_side_with_the_reference(
    benchmark, reference, standins, question, tmp_path, request
) -> None:
    counts: list[int] = request.config.getoption("--reference-devices")
    repeats: int = request.config.getoption("--reference-repeats")
    benchmark.group = "reference: echokit_server 0.3.2 vs echokit-fast, same config and devices"
    results: dict[str, dict[int, Runs]] = {"reference": {}, "ours": {}}

    def one(name: str, n: int, k: int) -> None:
        addr = f"127.0.0.1:{free_port()}"
        config = f'addr = "{addr}"\n{standins}'
        runs = results[name].setdefault(n, Runs())
        out = tmp_path / f"{name}-{n}-{k}"
        if name == "reference":
            with reference_process(reference, config, out / "server") as server:
                _load(server, addr, question, out / "devices", n, runs)
            return
        # ours also lifts the per-address connection cap (every device is 127.0.0.1);
        # the reference has none
        out.mkdir(parents=True)
        (out / "config.toml").write_text(config + limits(max(1000, 4 * n)))
        with serve_process(str(out / "config.toml")) as server:
            _load(server, addr, question, out / "devices", n, runs)

    def measure() -> None:
        for n in counts:
            for k in range(repeats):
                one("reference", n, k)
                one("ours", n, k)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    table = {name: {n: runs.figures() for n, runs in per.items()} for name, per in results.items()}
    # where both completed turns (a server whose devices all failed has no CPU per turn)
    ratio = {
        n: round(ours / ref, 2)
        for n in counts
        if (ours := table["ours"][n]["cpu_ms_per_turn"])
        and (ref := table["reference"][n]["cpu_ms_per_turn"])
    }
    info = {
        "counts": counts,
        "repeats": repeats,
        "servers": table,
        "cpu_per_turn_ratio_ours_over_reference": ratio,
        "devices_held": {name: _holds(per) for name, per in results.items()},
    }
    benchmark.extra_info.update(info)
    print(f"\nreference: {json.dumps(info)}")
    # What this bench can assert on either server: ours answered every turn of every device.
    for n, runs in results["ours"].items():
        assert runs.failed_devices == 0 and runs.turns == n * TURNS * repeats, (n, table)

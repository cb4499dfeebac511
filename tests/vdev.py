"""Run the virtual devices (firmware/: ``echokit-vdev``, and ``xiaozhi-vdev``, a virtual
xiaozhi-esp32 board) from tests and benches.

``scripts/setup.sh`` builds them into ``firmware/target/release/``; ``$ECHOKIT_VDEV`` and
``$XIAOZHI_VDEV`` point elsewhere. Its contract (options, summary JSON, events.jsonl, exit codes) is
``firmware/README.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VDEV = Path(
    os.environ.get("ECHOKIT_VDEV", ROOT / "firmware" / "target" / "release" / "echokit-vdev")
)
XIAOZHI_VDEV = Path(
    os.environ.get("XIAOZHI_VDEV", ROOT / "firmware" / "target" / "release" / "xiaozhi-vdev")
)


@dataclass
class Run:
    """One finished ``echokit-vdev`` run."""

    returncode: int
    summary: dict[str, Any]
    events: list[dict[str, Any]]
    out: Path
    stderr: str

    def device(self, index: int = 0) -> dict[str, Any]:
        return self.summary["devices"][index]

    def turns(self, index: int = 0) -> list[dict[str, Any]]:
        return self.device(index)["turns"]

    def of(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """The logged events named ``event`` whose fields equal ``match``."""
        return [
            e
            for e in self.events
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]

    def describe(self) -> str:
        summary = json.dumps(self.summary)[:3000]
        return f"exit {self.returncode}\nsummary: {summary}\n{self.stderr[-3000:]}"


def vdev(
    server: str, *wavs: Path, out: Path, args: tuple[str, ...] = (), timeout: float = 300
) -> Run:
    """Run the virtual device against ``server`` (``HOST:PORT`` of an EchoKit server), one
    turn per WAV, writing into ``out``; returns its exit code, summary and event log."""
    return _run(VDEV, ("--server", f"ws://{server}/ws/"), wavs, out, args, timeout)


def xiaozhi_vdev(
    server: str, *wavs: Path, out: Path, args: tuple[str, ...] = (), timeout: float = 300
) -> Run:
    """Run the virtual xiaozhi board against ``server`` (``HOST:PORT``), from its OTA call
    on (``args`` may hold ``--ws`` to skip it), one turn per WAV."""
    return _run(XIAOZHI_VDEV, ("--ota", f"http://{server}/xiaozhi/ota/"), wavs, out, args, timeout)


def _run(
    binary: Path,
    target: tuple[str, ...],
    wavs: tuple[Path, ...],
    out: Path,
    args: tuple[str, ...],
    timeout: float,
) -> Run:
    if not binary.is_file():
        raise AssertionError(
            f"{binary} is missing: build it with `bash scripts/setup.sh` "
            "(cargo build --release --manifest-path firmware/Cargo.toml)"
        )
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(binary),
        *([] if "--ws" in args else target),
        "--out",
        str(out),
        "--quiet",
        *args,
        *([] if not wavs else ["--turns", *map(str, wavs)]),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"{binary.name} printed no summary (exit {proc.returncode}): {exc}\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
        ) from None
    log = out / "events.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return Run(proc.returncode, summary, events, out, proc.stderr)

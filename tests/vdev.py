"""Run the virtual EchoKit device (firmware/, binary ``echokit-vdev``) from tests and benches.

``scripts/setup.sh`` builds it into ``firmware/target/release/echokit-vdev``; ``$ECHOKIT_VDEV``
points elsewhere. Its contract (options, summary JSON, events.jsonl, exit codes) is
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
    if not VDEV.is_file():
        raise AssertionError(
            f"{VDEV} is missing: build it with `bash scripts/setup.sh` "
            "(cargo build --release --manifest-path firmware/Cargo.toml)"
        )
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(VDEV),
        "--server",
        f"ws://{server}/ws/",
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
            f"echokit-vdev printed no summary (exit {proc.returncode}): {exc}\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
        ) from None
    log = out / "events.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return Run(proc.returncode, summary, events, out, proc.stderr)

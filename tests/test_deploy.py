"""deploy/echokit-fast.service: systemd accepts it, and it runs the server the way
deploy/README.md says (its own user, the settings file, restarts, the model cache)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "echokit-fast.service"


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` in a root holding the unit, the system's own units and the
    ExecStart program (verify checks that it exists): no error, no warning."""
    root = tmp_path / "root"
    exec_start = _settings()["ExecStart"][0].split()[0]
    program = root / exec_start.lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    out = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{UNIT.name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_the_unit_runs_the_server_as_documented() -> None:
    s = _settings()
    assert s["DynamicUser"] == ["yes"]  # a user of its own
    assert s["EnvironmentFile"] == ["-/etc/echokit-fast/env"]
    assert s["Restart"] == ["on-failure"]
    assert s["StateDirectory"] == ["echokit-fast"]
    env = dict(item.split("=", 1) for line in s["Environment"] for item in line.split())
    assert env["ECHOKIT_FAST_CACHE"] == "/var/lib/echokit-fast"
    assert env["HF_HOME"].startswith("/var/lib/echokit-fast/")
    assert s["ExecStart"][0].split()[1] == "serve"

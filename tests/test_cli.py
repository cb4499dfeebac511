"""The command line and the bare HTTP app, through a real process and socket."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
from harness import free_port, spawned_serve

import echokit_fast
from echokit_fast.server.lifecycle import READY_MESSAGE


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "echokit_fast", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_version_flag() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"echokit-fast {echokit_fast.__version__}"


def test_version_is_written_once() -> None:
    """native/Cargo.toml holds the version; the package metadata, the native module and every
    place that reports it take it from there (no second literal copy to forget on a bump)."""
    root = Path(__file__).resolve().parents[1]
    cargo = tomllib.loads((root / "native" / "Cargo.toml").read_text())["package"]["version"]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert echokit_fast.__version__ == cargo
    literal = re.compile(rf"[\"']{re.escape(cargo)}[\"']")
    copies = [
        str(p.relative_to(root))
        for p in (root / "echokit_fast").rglob("*.py")
        if literal.search(p.read_text(encoding="utf-8"))
    ]
    assert copies == []


def test_help_lists_serve() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    assert "serve" in out.stdout


def test_bad_listen_address_is_rejected() -> None:
    out = run_cli("serve", "--listen", "nonsense")
    assert out.returncode == 2
    assert "expected HOST:PORT" in out.stderr


def test_serve_answers_version() -> None:
    port = free_port()
    with spawned_serve("--listen", f"127.0.0.1:{port}"):
        r = httpx.get(f"http://127.0.0.1:{port}/version", timeout=10)
        assert r.status_code == 200
        assert r.json() == {
            "version": "0.3.2",
            "server": f"echokit-fast {echokit_fast.__version__}",
        }
        # spawned_serve waited for the ready line
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json() == {"status": "ok"}
        r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_app_in_process_version(serve) -> None:
    from echokit_fast.server.app import create_app

    addr = serve(create_app())
    r = httpx.get(f"http://{addr}/version", timeout=10)
    assert r.json() == {"version": "0.3.2", "server": f"echokit-fast {echokit_fast.__version__}"}
    assert httpx.get(f"http://{addr}/nope", timeout=10).status_code == 404


def test_check_config_accepts_the_gemini_layouts(data_dir) -> None:
    """The reference's Gemini Live configs, alone and with a TTS, pass check-config."""
    configs = data_dir / "configs"
    examples = configs / "examples" / "gemini"
    names = ("chat", "live", "singapore", "steve_jobs", "custom_tts")
    for path in (configs / "config.gemini.toml", *(examples / n / "config.toml" for n in names)):
        out = run_cli("check-config", str(path))
        assert out.returncode == 0 and "OK" in out.stdout, (path, out.stderr)


def test_check_config_and_serve_agree_on_every_example_config(data_dir) -> None:
    """For each of the reference's example configs: check-config reports as an error (exit 1)
    exactly what serve refuses at start-up (exit 2), in the same words; a config check-config
    calls OK is one serve does not refuse."""
    env = {**os.environ, "TELNYX_API_KEY": "k"}
    env.pop("CONFIG_PATH", None)
    refused = accepted = 0
    for path in sorted((data_dir / "configs").rglob("*.toml")):
        check = run_cli("check-config", str(path), env=env)
        if "invalid configuration" in check.stderr:
            continue  # not a loadable config at all (serve refuses it too, tested elsewhere)
        problems = [
            line.removeprefix("error: ")
            for line in check.stderr.splitlines()
            if line.startswith("error: ")
        ]
        if check.returncode == 0:
            assert not problems and "OK" in check.stdout, (path, check.stderr)
            accepted += 1
            continue
        assert check.returncode == 1 and problems, (path, check.stdout, check.stderr)
        serve = run_cli("serve", str(path), "--listen", "127.0.0.1:1", env=env)
        assert serve.returncode == 2, (path, serve.stderr)
        for problem in problems:
            assert f"echokit-fast serve: {path}: {problem}" in serve.stderr, (path, problem)
        refused += 1
    # Every loadable example is served now (what serve refuses for a layout or platform it
    # cannot run: test_serve_refuses_a_config_it_cannot_run_yet, tests/test_registry.py).
    assert refused == 0 and accepted >= 25, (refused, accepted)


def test_serve_on_port_0_binds_an_ephemeral_port_and_says_which(tmp_path) -> None:
    import re

    with spawned_serve("--listen", "127.0.0.1:0") as seen:
        assert b"addr:   127.0.0.1:0" in seen  # the summary names --listen, not the default
        ports = re.findall(rb"http://127\.0\.0\.1:(\d+)", seen)
        assert ports and int(ports[-1]) != 0, seen
        r = httpx.get(f"http://127.0.0.1:{int(ports[-1])}/version", timeout=10)
        assert r.status_code == 200


def test_serve_stops_at_start_up_when_an_embedded_model_is_missing(tmp_path) -> None:
    """The engines load while the server listens: a missing model is reported, with what was
    tried, and the server stops (exit status 1)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'addr = "127.0.0.1:0"\n'
        '[asr]\nplatform = "local"\nmodel = "/nonexistent/whisper-model"\n'
        '[tts]\nplatform = "local"\n'
        '[llm]\nplatform = "openai_chat"\nurl = "http://127.0.0.1:1/v1/chat/completions"\n'
        "history = 1\n"
    )
    out = run_cli("serve", str(cfg))
    assert out.returncode == 1
    assert "cannot load the embedded engines" in out.stderr
    assert "/nonexistent/whisper-model" in out.stderr
    assert READY_MESSAGE not in out.stderr + out.stdout

"""The command line and the bare HTTP app, through a real process and socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

import echokit_fast


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "echokit_fast", *args], capture_output=True, text=True, timeout=60
    )


def test_version_flag() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"echokit-fast {echokit_fast.__version__}"


def test_help_lists_serve() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    assert "serve" in out.stdout


def test_bad_listen_address_is_rejected() -> None:
    out = run_cli("serve", "--listen", "nonsense")
    assert out.returncode == 2
    assert "expected HOST:PORT" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_version() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "echokit_fast", "serve", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        # Wait for the server's own readiness line rather than sleeping.
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"Uvicorn running" in line or time.monotonic() > deadline:
                break
        r = httpx.get(f"http://127.0.0.1:{port}/version", timeout=10)
        assert r.status_code == 200
        assert r.json() == {"version": echokit_fast.__version__}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_app_in_process_version(serve) -> None:
    from echokit_fast.app import create_app

    addr = serve(create_app())
    r = httpx.get(f"http://{addr}/version", timeout=10)
    assert r.json() == {"version": echokit_fast.__version__}
    assert httpx.get(f"http://{addr}/nope", timeout=10).status_code == 404

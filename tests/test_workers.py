"""``echokit-fast serve --workers N``: a supervisor that listens and hands each connection to
one of N worker processes, every request about a device to the same worker.

The server runs as the real CLI in a child process, on stand-in backends (ASR, stream_gsv TTS,
chat LLM on loopback); devices are WebSocket clients speaking the device protocol.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import zlib
from pathlib import Path

import httpx
import pytest
from device_fakes import Device, name
from harness import free_port, running_server, serve_process
from standins import ChatServer

from echokit_fast.server.workers import WorkerSpec, route_key

WORKERS = 2
SYSTEM = "You are a test assistant."


def ids_of(worker: int, count: int) -> list[str]:
    """`count` device ids that the routing rule (crc32 of the id) gives to `worker`."""
    found = []
    n = 0
    while len(found) < count:
        device = f"dev{n:04d}"
        if zlib.crc32(device.encode()) % WORKERS == worker:
            found.append(device)
        n += 1
    return found


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


# -- the routing rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "key"),
    [
        (b"GET /ws/abc HTTP/1.1\r\nHost: x\r\n\r\n", "abc"),
        (b"GET /ws/abc?reconnect=true&opus=true HTTP/1.1\r\n\r\n", "abc"),
        (b"GET /v2/stable_ws/abc HTTP/1.1\r\n\r\n", "abc"),
        (b"GET /v1/record/a%20b HTTP/1.1\r\n\r\n", "a b"),
        (b"GET /downloads/download/abc/f.wav HTTP/1.1\r\n\r\n", "abc"),
        (b"GET /downloads/list/abc HTTP/1.1\r\n\r\n", "abc"),
        (b"GET /proxy/state/abc HTTP/1.1\r\n\r\n", "abc"),
        (b"POST /xiaozhi/devices/aa:bb/message HTTP/1.1\r\n\r\n", "aa:bb"),
        (b"GET /xiaozhi/v1/ HTTP/1.1\r\nHost: x\r\nDEVICE-ID: aa:bb \r\n\r\n", "aa:bb"),
        (b"GET /xiaozhi/v1/?device-id=aa%3Abb&client-id=1 HTTP/1.1\r\n\r\n", "aa:bb"),
        (b"POST /xiaozhi/ota/ HTTP/1.1\r\nDevice-Id: cc\r\n\r\n", "cc"),
        (b"GET /xiaozhi/v1/ HTTP/1.1\r\n\r\n", None),  # refused by the worker: 400
        (b"GET /ws/ HTTP/1.1\r\n\r\n", None),
        (b"POST /v1/audio/transcriptions HTTP/1.1\r\nDevice-Id: cc\r\n\r\n", None),
        (b"GET /console/status HTTP/1.1\r\n\r\n", None),
        (b"garbage\r\n\r\n", None),
        (b"", None),
    ],
)
def test_route_key(head: bytes, key: str | None) -> None:
    assert route_key(head) == key


def test_worker_spec_round_trips_and_refuses_a_bad_index() -> None:
    spec = WorkerSpec(1, 2, 7)
    assert WorkerSpec.parse(str(spec)) == spec
    with pytest.raises(ValueError):
        WorkerSpec.parse("2:2:7")


# -- a server with two workers -----------------------------------------------------------------


@pytest.fixture
def stack(tmp_path, asr, tts):
    chat = ChatServer()
    chat.default.deltas = ["Fine, thanks."]
    with running_server(chat.app) as chat_addr:
        addr = f"127.0.0.1:{free_port()}"
        cfg = tmp_path / "config.toml"
        cfg.write_text(
            f"""
addr = "{addr}"

[asr]
platform = "openai"
url = "http://{asr.addr}/v1/audio/transcriptions"

[tts]
platform = "stream_gsv"
url = "http://{tts.addr}/v1/audio/stream_speech"
speaker = "test"

[llm]
platform = "openai_chat"
url = "http://{chat_addr}/v1/chat/completions"
history = 5

[[llm.sys_prompts]]
role = "system"
content = "{SYSTEM}"
"""
        )
        log = tmp_path / "serve.log"
        with (
            open(log, "wb") as out,
            serve_process(str(cfg), "--workers", str(WORKERS), log=out) as sp,
        ):
            yield addr, chat, sp, log


async def text_turn(addr: str, device: str, text: str, **flags: bool) -> list:
    d = await Device.open(addr, device, opus=True, **flags)
    await d.command("Text", input=text)
    events = await d.until()
    await d.close()
    return events


def user_turns(chat: ChatServer, device_text: str) -> list[str]:
    """The user messages of the LLM request whose last message is `device_text`."""
    for rec in reversed(chat.requests):
        messages = rec.json["messages"]
        if messages[-1]["content"] == device_text:
            return [m["content"] for m in messages if m["role"] == "user"]
    raise AssertionError(f"no LLM request ended with {device_text!r}")


def test_a_device_finds_its_session_in_the_same_worker(stack) -> None:
    addr, chat, sp, _log = stack
    # two devices of each worker: a rule that ignored the id (the next worker in turn) would
    # take each device's second connection to the other worker, where no history is
    devices = ids_of(0, 2) + ids_of(1, 2)

    async def main() -> None:
        for device in devices:
            await text_turn(addr, device, f"first from {device}")
        for device in devices:
            await text_turn(addr, device, f"again from {device}", reconnect=True)

    asyncio.run(main())
    for device in devices:
        assert user_turns(chat, f"again from {device}") == [
            f"first from {device}",
            f"again from {device}",
        ]
    assert len(children(sp.proc.pid)) == WORKERS


def test_metrics_sum_every_workers_and_http_closes_each_connection(stack) -> None:
    addr, _chat, _sp, _log = stack
    devices = ids_of(0, 2) + ids_of(1, 1)

    async def main() -> str:
        held = []
        for device in devices:
            d = await Device.open(addr, device, opus=True)
            await d.command("Text", input="hi")
            await d.until()  # the session is attached
            held.append(d)
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://{addr}/metrics")
            assert answer.headers["connection"] == "close"
            for _ in range(2 * WORKERS):  # any worker: every one is ready
                ready = await client.get(f"http://{addr}/ready")
                assert ready.status_code == 200 and ready.headers["connection"] == "close"
            answering = set()
            for _ in range(WORKERS):  # the status page says which worker answers
                status = (await client.get(f"http://{addr}/console/api/status")).json()
                worker = status["server"]["worker"]
                assert worker["count"] == WORKERS
                answering.add(worker["index"])
            assert answering == set(range(WORKERS))
        for d in held:
            await d.close()
        return answer.text

    text = asyncio.run(main())
    assert re.search(r"^echokit_device_connections 3\.0$", text, re.M), text
    assert re.search(r"^echokit_device_sessions 3\.0$", text, re.M), text
    turns = re.search(r'^echokit_device_turns_total\{outcome="ok"\} (\S+)$', text, re.M)
    assert turns is not None and float(turns.group(1)) == 3.0


def wait_for(log: Path, pattern: str, count: int, proc) -> None:
    """Until `pattern` appears `count` times in the server's log (it keeps writing it); an
    exited server or 60 s without it fails."""
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.read_bytes().decode(errors="replace").count(pattern) >= count:
            return
        assert proc.poll() is None, log.read_text(errors="replace")
        time.sleep(0.05)  # polling the log file, not timing the server
    raise AssertionError(f"{pattern!r} x{count} not in the log:\n{log.read_text()}")


def test_a_worker_that_dies_is_started_again_and_serves_its_devices(stack) -> None:
    addr, chat, sp, log = stack
    device = ids_of(1, 1)[0]
    asyncio.run(text_turn(addr, device, "before"))
    first = children(sp.proc.pid)
    victim = first[1]
    os.kill(victim, signal.SIGKILL)
    wait_for(log, "exited (status -9): starting it again", 1, sp.proc)
    wait_for(log, "ready: every configured engine is loaded (2 workers)", 2, sp.proc)
    after = children(sp.proc.pid)
    assert len(after) == WORKERS and victim not in after and first[0] in after
    events = asyncio.run(text_turn(addr, device, "after"))
    assert name(events[-1]) == "EndResponse"
    assert user_turns(chat, "after") == ["after"]  # a new worker: the session was lost
    assert httpx.get(f"http://{addr}/ready").status_code == 200


def test_sigterm_drains_every_worker(stack) -> None:
    addr, _chat, sp, log = stack
    workers = children(sp.proc.pid)

    async def main() -> list[tuple[list, int | None]]:
        held = [await Device.open(addr, d, opus=True) for d in ids_of(0, 1) + ids_of(1, 1)]
        for d in held:
            await d.command("Text", input="hi")
            await d.until()
        sp.proc.send_signal(signal.SIGTERM)
        ended = []
        for d in held:  # each worker ends its devices as one server drains
            events = await d.until()
            await d.ws.wait_closed()
            ended.append(([name(e) for e in events], d.ws.close_code))
        return ended

    ended = asyncio.run(main())
    assert ended == [(["EndResponse"], 1000)] * 2, ended
    assert sp.proc.wait(timeout=60) == 0
    text = log.read_text()
    assert text.count("SIGTERM: draining (new connections refused)") == WORKERS
    assert "every worker has stopped" in text
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


# -- refusals at start-up ----------------------------------------------------------------------


def test_workers_refuse_what_one_process_must_do(tmp_path) -> None:
    import subprocess
    import sys

    import trustme

    cfg = tmp_path / "config.toml"
    cfg.write_text('addr = "127.0.0.1:0"\n[gemini]\napi_key = "unused"\n')
    issued = trustme.CA().issue_cert("127.0.0.1")  # files that load: the refusal is ours
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    for extra, why in (
        (("--config-write",), "--config-write"),
        (("--tls-cert", str(cert), "--tls-key", str(key)), "TLS"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "echokit_fast", "serve", str(cfg), "--workers", "2", *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert f"--workers 2 cannot go with {why}" in result.stderr


def test_a_worker_that_cannot_load_stops_the_server(tmp_path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""addr = "127.0.0.1:{free_port()}"
[asr]
platform = "local"
model = "/nonexistent/whisper-model"
[tts]
platform = "stream_gsv"
url = "http://127.0.0.1:9/tts"
speaker = "x"
[llm]
platform = "openai_chat"
url = "http://127.0.0.1:9/v1/chat/completions"
history = 1
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "echokit_fast", "serve", str(cfg), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "/nonexistent/whisper-model" in result.stderr
    assert "before it was ready" in result.stderr

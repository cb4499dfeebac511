"""The server's life: readiness while the engines load, the start-up pipeline, the LLM probe,
the SIGTERM/SIGINT drain of a real `echokit-fast serve`, environment settings, logging."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from device_fakes import Device, name
from harness import free_port, running_server, serve_process
from standins import ChatServer, Fail, TTSServer

from echokit_fast.backends.base import Backends
from echokit_fast.config import default_config, parse_config
from echokit_fast.server import lifecycle
from echokit_fast.server import logging as server_logging
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState


class Watched(AppState):
    """An AppState whose VAD load waits for `gate`, and that says when it is ready."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gate = threading.Event()
        self.loaded = threading.Event()

    def vad_model(self):
        assert self.gate.wait(30), "the gate was never opened"
        return super().vad_model()

    def mark_ready(self) -> None:
        super().mark_ready()
        self.loaded.set()

    def fail(self, exc: BaseException) -> None:
        super().fail(exc)
        self.loaded.set()


NO_ENGINES = default_config().model_copy(update={"asr": None, "tts": None, "layout": "none"})


def test_ready_is_503_while_the_engines_load_and_health_is_200_throughout(serve) -> None:
    state = Watched(NO_ENGINES, probe_llm=False)
    addr = serve(create_app(state=state))
    assert httpx.get(f"http://{addr}/health", timeout=10).json() == {"status": "ok"}
    r = httpx.get(f"http://{addr}/ready", timeout=10)
    assert r.status_code == 503 and r.json() == {"status": "loading"}
    state.gate.set()
    assert state.loaded.wait(30) and state.load_error is None
    r = httpx.get(f"http://{addr}/ready", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    assert httpx.get(f"http://{addr}/health", timeout=10).status_code == 200


def remote_config(tmp_path, port: int, hello: bytes = b"RIFF-hello"):
    path = tmp_path / "hello.wav"
    path.write_bytes(hello)
    return parse_config(
        f"""
addr = "127.0.0.1:{port}"
hello_wav = "{path}"
[asr]
platform = "openai"
url = "http://127.0.0.1:{port}/v1/audio/transcriptions"
[tts]
platform = "stream_gsv"
url = "http://127.0.0.1:{port}/v1/audio/stream_speech"
speaker = "a"
[llm]
platform = "openai_chat"
url = "http://127.0.0.1:{port}/v1/chat/completions"
history = 5
"""
    ).config


def test_start_up_builds_the_device_pipeline_in_the_loop_and_shutdown_closes_it(tmp_path) -> None:
    port = free_port()  # nothing listens there: building the clients must not connect
    state = Watched(remote_config(tmp_path, port), probe_llm=False)
    state.gate.set()
    with running_server(create_app(state=state)):
        assert state.loaded.wait(30) and state.load_error is None
        backends = state.backends
        assert isinstance(backends, Backends)
        assert state.device_settings is not None and state.device_hello == b"RIFF-hello"
        clients = [backends.transcriber.http, backends.speaker.http]
        assert not any(c.is_closed for c in clients)
    assert all(c.is_closed for c in clients)  # closed at shutdown
    assert state.backends is None


def test_an_engine_that_cannot_load_keeps_ready_at_503(serve, tmp_path) -> None:
    config = default_config().model_copy(update={"addr": "127.0.0.1:0"})
    config = config.model_copy(
        update={"asr": config.asr.model_copy(update={"model": "/nonexistent/whisper-model"})}
    )
    state = Watched(config, probe_llm=False)
    state.gate.set()
    addr = serve(create_app(state=state))
    assert state.loaded.wait(60)
    assert "/nonexistent/whisper-model" in str(state.load_error)
    assert httpx.get(f"http://{addr}/ready", timeout=10).status_code == 503


def test_two_apps_share_no_engine() -> None:
    a, b = AppState(NO_ENGINES), AppState(NO_ENGINES)
    assert a.vad_model() is a.vad_model()
    assert a.vad_model() is not b.vad_model()


def test_an_engine_is_built_once_when_threads_ask_together(monkeypatch) -> None:
    from echokit_fast.server import state as state_module

    built: list[object] = []
    barrier = threading.Barrier(8)

    def slow_build():
        built.append(object())
        return built[-1]

    monkeypatch.setattr(state_module, "SileroVad", slow_build)
    state = AppState(NO_ENGINES)
    got: list[object] = []

    def ask() -> None:
        barrier.wait(10)
        got.append(state.vad_model())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(built) == 1 and got == built * 8


# -- the LLM probe ---------------------------------------------------------------------------


def test_llm_models_url() -> None:
    cfg = remote_config_for("http://h:1/v1/chat/completions")
    assert lifecycle.llm_models_url(cfg) == "http://h:1/v1/models"


def remote_config_for(url: str):
    return default_config().model_copy(
        update={"llm": default_config().llm.model_copy(update={"url": url})}
    )


def test_probe_warns_once_naming_the_url_when_nothing_listens(caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    with caplog.at_level(logging.WARNING, logger="echokit_fast.server"):
        assert asyncio.run(lifecycle.probe_llm(remote_config_for(url))) is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert url.replace("/chat/completions", "/models") in warnings[0]
    assert "unreachable" in warnings[0]


def test_probe_is_silent_when_the_llm_answers_even_404(serve, caplog) -> None:
    chat = ChatServer()  # it has no /v1/models: a 404 means the server is there
    addr = serve(chat.app)
    with caplog.at_level(logging.WARNING, logger="echokit_fast.server"):
        cfg = remote_config_for(f"http://{addr}/v1/chat/completions")
        assert asyncio.run(lifecycle.probe_llm(cfg)) is True
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_probe_warns_on_a_5xx(serve, caplog) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def down(_request):
        return PlainTextResponse("down", status_code=503)

    addr = serve(Starlette(routes=[Route("/v1/models", down)]))
    with caplog.at_level(logging.WARNING, logger="echokit_fast.server"):
        cfg = remote_config_for(f"http://{addr}/v1/chat/completions")
        assert asyncio.run(lifecycle.probe_llm(cfg)) is False
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"http://{addr}/v1/models" in warning and "503" in warning


# -- SIGTERM / SIGINT ------------------------------------------------------------------------


def pipeline_config(tmp_path, chat_addr: str, tts_addr: str) -> str:
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
addr = "127.0.0.1:{port}"
[asr]
platform = "openai"
url = "http://{tts_addr}/v1/audio/transcriptions"
[tts]
platform = "stream_gsv"
url = "http://{tts_addr}/v1/audio/stream_speech"
speaker = "a"
[llm]
platform = "openai_chat"
url = "http://{chat_addr}/v1/chat/completions"
history = 1
"""
    )
    return str(cfg), f"127.0.0.1:{port}"


async def _turn_then_signal(addr: str, proc: subprocess.Popen, sig: int) -> list[str]:
    """Start a typed turn, signal the server once the turn is under way, return the names of
    every event received until the server's Close frame."""
    from websockets.exceptions import ConnectionClosedOK

    device = await Device.open(addr, "dev1")
    await device.command("Text", input="tell me a story")
    events = [name(e) for e in await device.until("ASR", timeout=30)]  # the turn runs
    proc.send_signal(sig)
    try:
        while True:
            events.append(name(await device.recv(timeout=30)))
    except ConnectionClosedOK:
        pass
    assert device.ws.close_code == 1000, device.ws.close_code
    return events


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_turn_lets_the_turn_finish_then_ends_every_device(serve, tmp_path, sig):
    chat, speech = ChatServer(), TTSServer()
    chat.reply(["Once upon a time.", " The end."], first_delay=0.5, delay=0.5)  # a slow LLM
    cfg, addr = pipeline_config(tmp_path, serve(chat.app), serve(speech.app))
    with serve_process(cfg) as sp:
        t0 = time.monotonic()
        events = asyncio.run(_turn_then_signal(addr, sp.proc, sig))
        status = sp.proc.wait(timeout=30)
        took = time.monotonic() - t0
    assert status == 0
    # the turn finished (both segments spoken), then the drain's EndResponse, then Close
    assert events.count("StartAudio") == 2 and events[-1] == "EndResponse", events
    assert events[-2] == "EndResponse", events  # the turn's own, then the drain's
    assert took < 10, took  # well within the 10 s bound: nothing waited for it


def test_sigterm_drain_is_bounded(serve, tmp_path) -> None:
    chat, speech = ChatServer(), TTSServer()
    chat.script.append(Fail(hang=True))  # an LLM that never answers
    cfg, addr = pipeline_config(tmp_path, serve(chat.app), serve(speech.app))
    with serve_process(cfg, "--drain-timeout", "1") as sp:
        t0 = time.monotonic()
        events = asyncio.run(_turn_then_signal(addr, sp.proc, signal.SIGTERM))
        status = sp.proc.wait(timeout=30)
        took = time.monotonic() - t0
    assert status == 0
    assert events[-1] == "EndResponse" and "StartAudio" not in events, events
    assert 1 <= took < 20, took


def test_sigterm_while_idle_exits_0_promptly(tmp_path) -> None:
    cfg, _addr = pipeline_config(tmp_path, "127.0.0.1:9", "127.0.0.1:9")
    with serve_process(cfg) as sp:
        t0 = time.monotonic()
        sp.proc.send_signal(signal.SIGTERM)
        status = sp.proc.wait(timeout=30)
    assert status == 0
    assert time.monotonic() - t0 < 10


# -- settings from the environment -----------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "echokit_fast", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ECHOKIT_LISTEN", "nonsense"),
        ("ECHOKIT_LOG_LEVEL", "loud"),
        ("ECHOKIT_LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_environment_value_is_a_clear_error_naming_the_variable(variable, value) -> None:
    out = run_cli("serve", env={variable: value})
    assert out.returncode == 2
    assert f"${variable}" in out.stderr and repr(value) in out.stderr, out.stderr


def test_environment_settings_and_flags_beat_them(tmp_path) -> None:
    from echokit_fast.cli import build_parser, serve_settings

    env = {
        "ECHOKIT_LISTEN": "127.0.0.1:7000",
        "ECHOKIT_LOG_LEVEL": "DEBUG",
        "ECHOKIT_LOG_FORMAT": "json",
        "ECHOKIT_CONFIG": "a.toml",
        "CONFIG_PATH": "b.toml",
    }
    got = serve_settings(build_parser().parse_args(["serve"]), env)
    assert (got.listen, got.log_level, got.log_format, got.config_path) == (
        ("127.0.0.1", 7000),
        "debug",
        "json",
        "a.toml",
    )
    args = ["serve", "--listen", "0.0.0.0:1", "--log-level", "error", "--log-format", "text"]
    got = serve_settings(build_parser().parse_args([*args, "--config", "c.toml"]), env)
    assert (got.listen, got.log_level, got.log_format, got.config_path) == (
        ("0.0.0.0", 1),
        "error",
        "text",
        "c.toml",
    )
    got = serve_settings(build_parser().parse_args(["serve"]), {"CONFIG_PATH": "b.toml"})
    assert got.config_path == "b.toml" and got.log_level == "info" and got.log_format == "text"


def test_serve_with_environment_settings_listens_and_logs_json(tmp_path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ECHOKIT_LISTEN": f"127.0.0.1:{port}",
        "ECHOKIT_LOG_FORMAT": "json",
        "ECHOKIT_LOG_LEVEL": "info",
    }
    cfg, _addr = pipeline_config(tmp_path, "127.0.0.1:9", "127.0.0.1:9")
    env["ECHOKIT_CONFIG"] = cfg
    with serve_process(env=env) as sp:
        r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
        assert r.status_code == 200
        lines = sp.output.decode().splitlines()
    objects = [json.loads(line) for line in lines if line.startswith("{")]
    assert objects and len(objects) == len([x for x in lines if x.strip()]), lines
    loggers = {o["logger"] for o in objects}
    assert any(n.startswith("uvicorn") for n in loggers), loggers
    assert any(n.startswith("echokit_fast") for n in loggers), loggers
    for o in objects:
        assert {"time", "level", "logger", "message"} <= set(o)


# -- logging -----------------------------------------------------------------------------------


def _record(msg: str, **extra) -> logging.LogRecord:
    logger = logging.getLogger("echokit_fast.trace")
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, (), None, extra=extra)


def test_json_lines_carry_extra_fields_and_the_trace_as_fields() -> None:
    fmt = server_logging.JsonFormatter()
    obj = json.loads(fmt.format(_record("hello you", device="abc")))
    assert obj["message"] == "hello you" and obj["device"] == "abc"
    assert obj["logger"] == "echokit_fast.trace" and obj["level"] == "INFO"
    assert obj["time"].endswith("Z")
    trace = {"device": "d", "turn": 1, "outcome": "ok", "ms": {"end_vad": 1.5}}
    line = json.dumps(trace, sort_keys=True)
    obj = json.loads(fmt.format(_record(line, fields=trace, event="turn")))
    assert obj["message"] == "turn"
    assert {k: obj[k] for k in trace} == trace
    # the text form is the line of today: the JSON of the trace
    text = logging.Formatter(server_logging.TEXT_FORMAT).format(
        _record(line, fields=trace, event="turn")
    )
    assert text == f"INFO:  echokit_fast.trace: {line}"


def test_the_trace_logs_its_fields(caplog) -> None:
    from echokit_fast.conversation.trace import TurnTrace

    with caplog.at_level(logging.INFO, logger="echokit_fast.trace"):
        record = TurnTrace("dev", 3).finish()
    (logged,) = [r for r in caplog.records if r.name == "echokit_fast.trace"]
    assert logged.fields == record and logged.event == "turn"
    assert json.loads(logged.getMessage()) == record


def test_log_level_applies_to_every_logger() -> None:
    code = (
        "import logging\n"
        "from echokit_fast.server import logging as l\n"
        "logging.getLogger('uvicorn.error').setLevel(logging.DEBUG)\n"
        "l.configure('warning', 'text')\n"
        "for n in ('echokit_fast.device', 'uvicorn.error', 'uvicorn.access', 'httpx'):\n"
        "    logging.getLogger(n).info('hidden %s', n)\n"
        "    logging.getLogger(n).warning('shown %s', n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "hidden" not in out.stderr
    for n in ("echokit_fast.device", "uvicorn.error", "uvicorn.access", "httpx"):
        assert f"WARNING:  {n}: shown {n}" in out.stderr

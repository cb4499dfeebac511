"""Who may use the server (echokit_fast/server/security.py), over real sockets: the Origin
check of WebSocket upgrades and state-changing requests, CORS preflights, and the API key of
the recording downloads (``[server]`` of the config, or ``$ECHOKIT_API_KEY``)."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
import websockets
from harness import API_ONLY, api_state, free_port, serve_process
from websockets.exceptions import InvalidStatus

from echokit_fast.config import ConfigError, parse_config
from echokit_fast.server.app import create_app

ALLOWED = "http://allowed.example"
EVIL = "http://evil.example"
KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}  # the /v1 routes need the key set below
WAV_FORM = {"file": ("a.wav", b"not a wav", "audio/wav")}


@pytest.fixture
def addr(serve, tmp_path) -> str:
    (tmp_path / "rec" / "dev").mkdir(parents=True)
    (tmp_path / "rec" / "dev" / "one.wav").write_bytes(b"RIFF-recording")
    config = parse_config(
        API_ONLY
        + f'[record]\ndir = "{tmp_path / "rec"}"\n'
        + f'[server]\nallowed_origins = ["{ALLOWED}/"]\napi_key = "{KEY}"\n',
        log_issues=False,
    ).config
    return serve(create_app(state=api_state(config)))


def _upgrade(url: str, origin: str | None) -> int:
    """101 when the upgrade is accepted, else the refusal's status."""

    async def run() -> int:
        headers = {**AUTH, "Origin": origin} if origin else AUTH
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=30):
                return 101
        except InvalidStatus as exc:
            assert b"allowed_origins" in exc.response.body
            return exc.response.status_code

    return asyncio.run(run())


@pytest.mark.parametrize("path", ["/ws/dev", "/v2/stable_ws/dev", "/v1/audio/realtime_vad"])
def test_a_cross_origin_websocket_upgrade_is_refused_before_accept(addr, path) -> None:
    for origin in (EVIL, "null", "http://allowed.example:8080"):
        assert _upgrade(f"ws://{addr}{path}", origin) == 403, origin


def test_websocket_upgrades_without_origin_same_origin_or_allowed_are_accepted(addr) -> None:
    url = f"ws://{addr}/v1/audio/realtime_vad"
    origins = (None, f"http://{addr}", ALLOWED, "HTTP://Allowed.Example:80", EVIL)
    assert [_upgrade(url, origin) for origin in origins] == [101, 101, 101, 101, 403]


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/audio/vad"])
def test_a_cross_origin_post_is_refused_and_not_run(addr, path) -> None:
    form = {"audio": WAV_FORM["file"], **WAV_FORM}
    r = httpx.post(f"http://{addr}{path}", files=form, headers={**AUTH, "Origin": EVIL}, timeout=30)
    assert r.status_code == 403
    assert "cross-origin POST refused" in r.text and "allowed_origins" in r.text
    # the same request without Origin, same-origin, or from the allowed origin is run (and
    # refused by the route itself: the file is no WAV)
    for headers in ({}, {"Origin": f"http://{addr}"}, {"Origin": ALLOWED}):
        r = httpx.post(f"http://{addr}{path}", files=form, headers={**AUTH, **headers}, timeout=30)
        assert r.status_code == 400, (headers, r.text)
    assert r.headers["access-control-allow-origin"] == ALLOWED
    # reads stay open to every origin (the browser keeps the answer from the page)
    r = httpx.get(f"http://{addr}/health", headers={"Origin": EVIL}, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_preflights_are_answered_for_allowed_origins_and_refused_for_others(addr) -> None:
    url = f"http://{addr}/v1/audio/transcriptions"
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    ok = httpx.options(url, headers={"Origin": ALLOWED, **ask}, timeout=30)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "content-type" in ok.headers["access-control-allow-headers"].lower()
    refused = httpx.options(url, headers={"Origin": EVIL, **ask}, timeout=30)
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("path", ["/downloads/list/dev", "/downloads/download/dev/one.wav"])
def test_downloads_need_the_api_key_when_one_is_set(addr, path) -> None:
    url = f"http://{addr}{path}"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.get(url, headers=headers, timeout=30)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 200
    assert r.content == b"RIFF-recording" or r.json()[0]["file_name"] == "one.wav"


def test_the_api_key_comes_from_the_environment_for_serve(tmp_path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "ECHOKIT_API_KEY": KEY}
    with serve_process(_remote_config(tmp_path, addr), env=env):
        url = f"http://{addr}/downloads/list/dev"
        assert httpx.get(url, timeout=30).status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.get(url, headers=auth, timeout=30).status_code == 404  # no recordings


def _remote_config(tmp_path, addr: str) -> str:
    dead = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'addr = "{addr}"\n'
        f'[asr]\nplatform = "openai"\nurl = "http://127.0.0.1:{dead}/v1/audio/transcriptions"\n'
        f'[tts]\nplatform = "stream_gsv"\nurl = "http://127.0.0.1:{dead}/v1/speech"\n'
        'speaker = "a"\n'
        f'[llm]\nplatform = "openai_chat"\nurl = "http://127.0.0.1:{dead}/v1/chat/completions"\n'
        "history = 1\n"
    )
    return str(cfg)


def test_serve_warns_once_when_open_to_the_network(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ECHOKIT_API_KEY"}
    port = free_port()
    with serve_process(_remote_config(tmp_path, f"0.0.0.0:{port}"), env=env) as served:
        assert served.output.count(b"anyone on the network may use this server") == 1
        # and the open API answers without a key
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).status_code == 200
    with serve_process(
        _remote_config(tmp_path, f"0.0.0.0:{free_port()}"), "--api-key", KEY, env=env
    ) as served:
        assert b"anyone on the network" not in served.output


def test_allowed_origins_are_validated_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(API_ONLY + '[server]\nallowed_origins = ["evil.example"]\n', log_issues=False)
    assert "server.allowed_origins: expected an origin such as 'http://host:port'" in str(err.value)


def _device_upgrade(url: str) -> int:
    """101 when the device WebSocket is accepted, else the refusal's status."""

    async def run() -> int:
        try:
            async with websockets.connect(url, open_timeout=30):
                return 101
        except InvalidStatus as exc:
            assert b"[server] devices" in exc.response.body
            return exc.response.status_code

    return asyncio.run(run())


def test_only_the_listed_device_ids_may_connect(serve, tmp_path) -> None:
    config = parse_config(
        API_ONLY
        + f'[record]\ndir = "{tmp_path / "rec"}"\n'
        + '[server]\ndevices = ["A0B1C2D3E4F5", "kitchen"]\n',
        log_issues=False,
    ).config
    addr = serve(create_app(state=api_state(config)))
    paths = ["/ws/a0b1c2d3e4f5", "/v2/stable_ws/kitchen", "/v1/record/kitchen"]
    assert [_device_upgrade(f"ws://{addr}{p}") for p in paths] == [101, 101, 101]
    refused = ["/ws/a0b1c2d3e4f6", "/v2/stable_ws/other", "/v1/record/other", "/ws/x?record=true"]
    assert [_device_upgrade(f"ws://{addr}{p}") for p in refused] == [403] * 4


def test_device_allow_list_is_validated_at_load() -> None:
    for value in ("[]", '["ok", " "]'):
        with pytest.raises(ConfigError) as err:
            parse_config(API_ONLY + f"[server]\ndevices = {value}\n", log_issues=False)
        assert "server.devices: expected a non-empty list of device ids" in str(err.value)

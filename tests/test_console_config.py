"""The config editor (``/console/config``, echokit_fast/devices/web/config.py): its JSON API on
a real server, the save applied to a running server, and the page in a real headless Chromium.

* The API answers the file ``serve`` was started with (or the embedded default written as
  TOML, which parses back into the same config), the registry's platforms, and whether a save
  would be taken; the page holds no data and loads only local files.
* The check is ``check-config``'s: every problem with its line and key (a bad platform, an
  unknown key, a TOML syntax error, bytes that are not UTF-8), in the same words as the
  command; a body over the limit is a 413.
* A save is refused without ``--config-write``, without an API key set and without the key
  in the request, and for a config with errors (nothing written). A save taken replaces the
  file, keeps the old one as ``.bak`` and is applied at once: a device connected before
  stays connected and its next turn goes to the new LLM with the new system prompt; what
  needs a restart is said.
* In Chromium, on a phone-sized screen: the page asks for the key, shows a bad platform at
  its line (the problem selects the line), the platform dropdown rewrites that line, and
  Save writes the text.
* A turn running when the save comes ends on the old LLM; the next one is the new LLM's.
* What cannot change live ([server], [limits], an in-process engine's settings) is said and
  keeps running as it started.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the Hugging Face hub in tests

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from device_fakes import Device, FakeSpeaker
from harness import API_ONLY, free_port, serve_process
from pages import PHONE, screenshot
from standins import ChatServer

from echokit_fast.cli import build_parser, main, serve_settings
from echokit_fast.config import default_config, parse_config
from echokit_fast.devices.web.config import MAX_CONFIG_BYTES
from echokit_fast.server import reload
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

WAIT_MS = 20_000
KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONFIG = "/console/api/config"
CHECK = "/console/api/config/check"


def pipeline(asr: str, tts: str, chat: str, prompt: str, *, key: bool = True) -> str:
    """A pipeline config on stand-ins, with the API key (or none)."""
    server = f'[server]\napi_key = "{KEY}"\n' if key else ""
    return f"""addr = "127.0.0.1:0"
{server}
[asr]
platform = "openai"
url = "http://{asr}/v1/audio/transcriptions"

[tts]
platform = "openai"
api_key = "unused"
url = "http://{tts}/v1/audio/speech"

[llm]
platform = "openai_chat"
url = "http://{chat}/v1/chat/completions"
history = 5

[[llm.sys_prompts]]
role = "system"
content = "{prompt}"
"""


def app_for(path: Path, *, write: bool = False) -> tuple[AppState, object]:
    state = AppState(parse_config(path.read_text(), log_issues=False).config, config_path=path)
    state.config_write = write
    state.probe_llm = False
    return state, create_app(state=state)


def write(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


# -- reading -------------------------------------------------------------------------------


def test_the_api_answers_the_file_its_platforms_and_whether_it_saves(serve, tmp_path) -> None:
    path = write(tmp_path, API_ONLY + f'[server]\napi_key = "{KEY}"\n')
    _, app = app_for(path)
    client = httpx.Client(base_url=f"http://{serve(app)}", timeout=10)
    r = client.get(CONFIG)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    body = client.get(CONFIG, headers=AUTH).json()
    assert body["path"] == str(path) and body["source"] == "file"
    assert body["text"] == path.read_text()
    assert body["writable"] is False and "--config-write" in body["write_refusal"]
    asr = {p["name"]: p for p in body["platforms"]["asr"]}
    assert asr["local"]["runnable"] and "whisper" in asr["openai"]["aliases"]
    llm = {p["name"] for p in body["platforms"]["llm"]}
    assert {"openai_chat", "openai_responses", "local"} <= llm
    path.write_text(path.read_text() + "# edited\n")  # the file as it is now
    assert client.get(CONFIG, headers=AUTH).json()["text"].endswith("# edited\n")

    page = client.get("/console/config")  # no data in it: no key needed
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    files = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert set(files) == {"static/console.css", "static/status.css", "static/config.css",
                          "static/config.js", "../", "status", "config"}  # fmt: skip
    for name in ("config.css", "config.js"):
        r = client.get(f"/console/static/{name}")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache", name
        assert not re.search(r"(?i)\b(?:https?|wss?)://|[\"'(]//\w", r.text), name


def test_the_embedded_default_is_shown_as_toml_that_parses_back(serve) -> None:
    config = default_config(llm_url="http://127.0.0.1:9/v1", turn_detector="smart_turn")
    state = AppState(config)
    state.config_write = True  # no file: still nothing to write
    body = httpx.get(f"http://{serve(create_app(state=state))}{CONFIG}", timeout=10).json()
    assert body["path"] is None and body["source"] == "embedded default"
    assert body["writable"] is False and "embedded default" in body["write_refusal"]
    again = parse_config(body["text"], log_issues=False).config
    for name in ("addr", "layout", "asr", "tts", "llm"):
        assert getattr(again, name) == getattr(config, name), name
    assert 'turn_detector = "smart_turn"' in body["text"]


# -- checking ------------------------------------------------------------------------------


def test_the_check_gives_each_problem_its_line_and_key_as_check_config_does(
    serve, tmp_path, capsys, monkeypatch
) -> None:
    _, app = app_for(write(tmp_path, API_ONLY))
    client = httpx.Client(base_url=f"http://{serve(app)}", timeout=10)
    good = pipeline("127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9", "Be brief.", key=False)

    bad = good.replace('platform = "openai"\napi_key', 'platform = "opnai"\napi_key')
    r = client.post(CHECK, content=bad)
    assert r.status_code == 200
    got = r.json()
    assert got["ok"] is False and len(got["errors"]) == 1
    error = got["errors"][0]
    assert error["line"] == line_of(bad, '"opnai"') and error["key"] == "tts.platform"
    assert "unknown platform 'opnai' (did you mean 'openai'?" in error["message"]
    # the same problem in the same words as `echokit-fast check-config`
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    assert main(["check-config", str(path)]) == 1
    said = f"error: {path}:{error['line']}: tts.platform: {error['message']}"
    assert said in capsys.readouterr().err

    typo = good.replace("history = 5", "histroy = 5\nhistory = 5")
    got = client.post(CHECK, content=typo).json()
    assert got["ok"] is True and got["errors"] == []
    assert got["warnings"] == [
        {"line": line_of(typo, "histroy"), "key": "llm.histroy",
         "message": "unknown key for platform openai_chat (ignored)"}
    ]  # fmt: skip

    syntax = good.replace("[llm]", "[llm")
    got = client.post(CHECK, content=syntax).json()
    assert got["ok"] is False and got["errors"][0]["line"] == line_of(syntax, "[llm")
    assert got["errors"][0]["message"].startswith("invalid TOML")

    raw = good.encode().replace(b"Be brief.", b"Be \xff brief.")
    got = client.post(CHECK, content=raw).json()
    assert got["errors"][0]["line"] == line_of(good, "Be brief.")
    assert "not UTF-8" in got["errors"][0]["message"]

    # a message quoting a value from the server's environment shows its name instead
    for secret in ("hunter2-secret", "hunter2-" + "x" * 80):  # (a long one is cut short)
        monkeypatch.setenv("ECHOKIT_TEST_SECRET", secret)
        r = client.post(CHECK, content=good.replace('"127.0.0.1:0"', '"${ECHOKIT_TEST_SECRET}"'))
        assert "${ECHOKIT_TEST_SECRET}" in r.json()["errors"][0]["message"]
        assert "hunter2" not in r.text and r.json()["errors"][0]["key"] == "addr"

    r = client.post(CHECK, content=b"#" * (MAX_CONFIG_BYTES + 1))
    assert r.status_code == 413 and r.json()["error"]["code"] == "config_too_large"


# -- saving --------------------------------------------------------------------------------


def test_a_save_is_refused_without_the_flag_the_key_or_a_valid_config(serve, tmp_path) -> None:
    text = pipeline("127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9", "Be brief.")
    path = write(tmp_path, text)
    new = text.replace("Be brief.", "Be kind.")

    _, app = app_for(path)  # no --config-write
    r = httpx.put(f"http://{serve(app)}{CONFIG}", content=new, headers=AUTH, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "config_read_only"
    assert "--config-write" in r.json()["error"]["message"]

    open_path = write(tmp_path / "open", text.replace(f'[server]\napi_key = "{KEY}"\n', ""))
    _, app = app_for(open_path, write=True)  # the flag, but no key set: a local client too
    r = httpx.put(f"http://{serve(app)}{CONFIG}", content=new, timeout=10)
    assert r.status_code == 403 and "needs an API key" in r.json()["error"]["message"]

    _, app = app_for(path, write=True)
    client = httpx.Client(base_url=f"http://{serve(app)}", timeout=10)
    assert client.get(CONFIG, headers=AUTH).json()["writable"] is True
    r = client.put(CONFIG, content=new)
    assert r.status_code == 401 and "Missing API key" in r.json()["error"]["message"]
    r = client.put(CONFIG, content=new, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    broken = new.replace('platform = "openai_chat"', 'platform = "openai_chatt"')
    r = client.put(CONFIG, content=broken, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "config_invalid"
    assert r.json()["errors"][0]["key"] == "llm.platform"
    assert r.json()["errors"][0]["line"] == line_of(broken, "openai_chatt")
    assert path.read_text() == text and not (tmp_path / "config.toml.bak").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file
    assert open_path.read_text().endswith('content = "Be brief."\n')


async def turn(device: Device, text: str) -> None:
    await device.command("Text", input=text)
    await device.until("EndResponse")


def test_a_save_is_applied_and_a_connected_device_keeps_going_on_it(
    serve, tmp_path, asr, tts
) -> None:
    first, second = ChatServer(), ChatServer()
    one, two = serve(first.app), serve(second.app)
    text = pipeline(asr.addr, tts.addr, one, "You are the first.")
    path = write(tmp_path, text)
    state, app = app_for(path, write=True)
    addr = serve(app)
    new = pipeline(asr.addr, tts.addr, two, "You are the second.").replace(
        '"127.0.0.1:0"', f'"127.0.0.1:{free_port()}"'
    )

    async def run() -> dict:
        device = await Device.open(addr, "dev-config-1")
        await turn(device, "Hello")  # (the server is ready once a turn is done)
        state.llm_reachable = True  # as the start-up probe of the first LLM would say
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.put(f"http://{addr}{CONFIG}", content=new, headers=AUTH)
        assert r.status_code == 200, r.text
        await turn(device, "Hello again")  # the same socket
        assert state.sessions is not None
        assert state.sessions.sessions["dev-config-1"].conn is not None
        await device.close()
        return r.json()

    saved = asyncio.run(run())
    assert saved["saved"] is True and saved["ok"] is True
    assert saved["applied"] == ["llm"]
    assert saved["needs_restart"] == ["addr: the server listens where it started until it restarts"]
    assert path.read_text() == new
    assert (tmp_path / "config.toml.bak").read_text() == text
    assert saved["backup"] == str(tmp_path.resolve() / "config.toml.bak")
    assert len(first.requests) == 1 and len(second.requests) == 1
    messages = second.requests[0].json["messages"]
    assert messages[0] == {"role": "system", "content": "You are the second."}
    assert messages[-1] == {"role": "user", "content": "Hello again"}
    assert len(tts.requests) == 2  # the TTS client was kept: it did not change
    assert state.config.addr == "127.0.0.1:0"  # still where it listens
    assert state.llm_reachable is None  # the first LLM's probe says nothing of the second


def test_a_turn_running_at_the_save_ends_on_the_old_llm(serve, tmp_path, asr, tts) -> None:
    first, second = ChatServer(), ChatServer()
    first.reply(["Waves. "], forever="More waves. ", delay=0.2)  # an answer that never ends
    one, two = serve(first.app), serve(second.app)
    path = write(tmp_path, pipeline(asr.addr, tts.addr, one, "You are the first."))
    _, app = app_for(path, write=True)
    addr = serve(app)
    new = pipeline(asr.addr, tts.addr, two, "You are the second.")

    async def run() -> None:
        device = await Device.open(addr, "dev-config-2")
        await device.command("Text", input="Tell me about the sea")
        await device.until("EndAudio")  # the answer is under way
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.put(f"http://{addr}{CONFIG}", content=new, headers=AUTH)
        assert r.status_code == 200 and r.json()["applied"] == ["llm"]
        await device.until("EndAudio")  # it goes on after the save, from the first LLM
        assert not first.disconnected.is_set()
        await turn(device, "Stop")  # interrupts it: the next turn is the second LLM's
        await device.close()

    asyncio.run(run())
    assert first.disconnected.wait(10)  # its stream was closed by the interruption
    assert len(first.requests) == 1 and len(second.requests) == 1
    assert second.requests[0].json["messages"][0]["content"] == "You are the second."
    assert second.requests[0].json["messages"][-1]["content"] == "Stop"


def test_what_needs_a_restart_is_said_and_keeps_running() -> None:
    openai_tts = (
        'platform = "openai"\napi_key = "unused"\nurl = "http://127.0.0.1:9/v1/audio/speech"'
    )
    text = pipeline("127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9", "Be brief.", key=False)
    before = text.replace(openai_tts, 'platform = "local"')
    after = before.replace('platform = "local"', 'platform = "local"\nspeed = 1.5')
    after += '[limits]\nmax_sessions = 5\n[server]\nallowed_origins = ["http://a.example"]\n'
    state = AppState(parse_config(before, log_issues=False).config)
    state.tts = FakeSpeaker()  # the in-process TTS engine, loaded
    new = parse_config(after, log_issues=False).config

    done = asyncio.run(reload.apply(state, new, state.config))
    assert done.applied == ["tts"]
    assert done.needs_restart == [
        "[server]: origins, API keys and device checks change at the next start",
        "[limits]: the connection edge and the engines' caps change at the next start",
        "[tts]: the in-process TTS engine keeps its settings until a restart",
    ]
    assert state.config.limits.max_sessions == 1000 and state.config.server.allowed_origins == []
    assert state.config.tts == new.tts and state.backends is not None
    assert state.backends.speaker is state.tts  # the engine as it was loaded


def test_the_write_flag_comes_from_the_flag_or_the_environment(tmp_path) -> None:
    parse = build_parser().parse_args
    assert serve_settings(parse(["serve"]), {}).config_write is False
    assert serve_settings(parse(["serve"]), {"ECHOKIT_CONFIG_WRITE": "1"}).config_write is True
    assert serve_settings(parse(["serve", "--config-write"]), {}).config_write is True
    with pytest.raises(ValueError, match="ECHOKIT_CONFIG_WRITE"):
        serve_settings(parse(["serve"]), {"ECHOKIT_CONFIG_WRITE": "maybe"})

    port = free_port()
    cfg = write(tmp_path, API_ONLY.replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    with serve_process(str(cfg), "--api-key", KEY, env={**os.environ, "ECHOKIT_CONFIG_WRITE": "1"}):
        body = httpx.get(f"http://127.0.0.1:{port}{CONFIG}", headers=AUTH, timeout=10).json()
    assert body["path"] == str(cfg) and body["writable"] is True and body["write_refusal"] is None


# -- the page ------------------------------------------------------------------------------


def test_the_page_shows_a_bad_platform_at_its_line_and_the_form_edits_it(
    serve, browser, tmp_path
) -> None:
    good = pipeline("127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9", "Be brief.")
    path = write(tmp_path, good)
    _, app = app_for(path, write=True)
    addr = serve(app)
    text = good.replace('platform = "openai"\napi_key', 'platform = "opnai"\napi_key')
    path.write_text(text)  # edited by hand since the start: the page shows it as it is
    bad = line_of(text, '"opnai"')
    context = browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(f"http://{addr}/console/config")
        page.wait_for_function("() => window.echokitConfig.state === 'locked'", timeout=WAIT_MS)
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Use key").click()
        page.wait_for_function("() => window.echokitConfig.checks === 1", timeout=WAIT_MS)
        assert page.get_by_role("textbox", name="config.toml").input_value() == text
        assert page.get_by_role("button", name="Save and apply").is_enabled()

        problem = page.locator(f'#problems li[data-kind="error"] button[data-line="{bad}"]')
        assert f"line {bad} · tts.platform" in problem.inner_text()
        assert "unknown platform 'opnai'" in problem.inner_text()
        assert page.locator("#gutter div.bad").inner_text() == str(bad)
        screenshot(page, "config")
        problem.click()
        selected = page.evaluate(
            "() => { const t = document.getElementById('text');"
            " return t.value.slice(t.selectionStart, t.selectionEnd); }"
        )
        assert selected == 'platform = "opnai"'
        assert page.evaluate("window.echokitConfig.selectedLine") == bad

        tts = page.locator('fieldset[data-section="tts"]')
        tts.get_by_label("platform").select_option("openai")
        editor = page.get_by_role("textbox", name="config.toml")
        assert editor.input_value() == text.replace('"opnai"', '"openai"')
        page.get_by_role("button", name="Check").click()
        page.wait_for_function("() => window.echokitConfig.checks === 2", timeout=WAIT_MS)
        assert page.locator("#verdict").inner_text().startswith("OK")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        page.get_by_role("button", name="Save and apply").click()
        page.wait_for_function("() => window.echokitConfig.saves === 1", timeout=WAIT_MS)
        assert page.locator("#verdict").inner_text().startswith(f"Saved to {path}")
        assert path.read_text() == editor.input_value()
        assert (tmp_path / "config.toml.bak").read_text() == text
    finally:
        context.close()

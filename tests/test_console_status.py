"""The status page (``/console/status``, echokit_fast/devices/web/status.py): its JSON API and
live feed on a real server, and the page in a real headless Chromium.

* The API and its feed answer 401 without the key when one is set, and 200 with it; with no
  key, only a client on this machine (a client at another address gets 403); the page itself
  holds no data and is served to anyone, with local files only.
* A device's typed turn is in the status and in the live feed (its record, its stages in
  order, no transcript), with the device and the loaded engines; the LLM probe's answer is
  kept for it.
* A feed ends cleanly: a client that leaves is no longer counted, a quiet feed sends
  heartbeats, and SIGTERM ends it with ``closing`` at once (``serve`` exits 0 promptly).
* In Chromium, the page open first shows a browser device (the talk page in another tab) and
  its turn's waterfall as they happen, without a reload, on a phone-sized screen; it asks for
  the API key when the API says 401 and keeps it for the tab.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the Hugging Face hub in tests

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from device_fakes import Device
from harness import API_ONLY, api_state, free_port, serve_process
from pages import PHONE, screenshot
from standins import ChatServer
from starlette.requests import Request

from echokit_fast.config import default_config, parse_config
from echokit_fast.conversation.trace import STAGES
from echokit_fast.devices.web import status
from echokit_fast.devices.web.access import refusal
from echokit_fast.server import lifecycle
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

WAIT_MS = 30_000
KEY = "s3cret-key"
STATUS = "/console/api/status"
EVENTS = "/console/api/status/events"
#: the stages a typed turn reaches (no speech, no ASR)
TEXT_STAGES = ["llm_first", "tts_first", "first_frame", "last_frame"]
QUESTION = "Tell me about the sea"
ANSWER = ["The sea is wide. ", "It is blue."]


def with_key() -> AppState:
    return api_state(parse_config(API_ONLY + f'[server]\napi_key = "{KEY}"\n').config)


def embedded_app(chat_addr: str, whisper, speaker):
    """The default layout: the embedded Whisper and TTS, a stand-in LLM."""
    state = AppState(default_config(llm_url=f"http://{chat_addr}/v1"))
    state.asr, state.tts = whisper, speaker
    state.record_dir = Path("/nonexistent")
    return create_app(state=state)


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, object]]:
    """The (event, data) of an SSE stream; comments as ("comment", text)."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            kind, data = "message", None
            for line in block.split("\n"):
                if line.startswith(":"):
                    kind, data = "comment", line[1:].strip()
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
            yield kind, data


async def next_event(events: AsyncIterator[tuple[str, object]], kind: str, timeout: float = 20):
    """The data of the next `kind` event (others skipped)."""
    async with asyncio.timeout(timeout):
        async for got, data in events:
            if got == kind:
                return data
    raise AssertionError(f"the stream ended before a {kind} event")


# -- the API --------------------------------------------------------------------------------


def test_with_a_key_the_api_needs_it_and_the_page_is_served_to_anyone(serve) -> None:
    client = httpx.Client(base_url=f"http://{serve(create_app(state=with_key()))}", timeout=10)
    for path in (STATUS, EVENTS):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert "Missing API key" in r.json()["error"]["message"]
        wrong = client.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Incorrect" in wrong.json()["error"]["message"]
    r = client.get(STATUS, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    body = r.json()
    assert body["stages"] == list(STAGES) and body["turns"] == [] and body["devices"] == []
    assert body["server"]["layout"] == "gemini" and body["server"]["state"] in ("loading", "ready")
    with client.stream("GET", EVENTS, headers={"Authorization": f"Bearer {KEY}"}) as feed:
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/event-stream")
        first = next(feed.iter_text())
        assert first.startswith("retry: ") and "event: snapshot" in first

    page = client.get("/console/status")  # no data in it: no key needed
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    files = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert set(files) == {"static/console.css", "static/status.css", "static/status.js"}
    # the nav: the talk page, this one, the editor
    links = re.findall(r'<a href="([^"]+)"', page.text)
    assert {"../", "status", "config"} <= set(links)
    for name in ("console.css", "status.css", "status.js"):
        r = client.get(f"/console/static/{name}")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache", name
        assert r.headers["content-type"].split(";")[0] in ("text/css", "text/javascript")
        assert not re.search(r"(?i)\b(?:https?|wss?)://|[\"'(]//\w", r.text), name


def scope(client: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": STATUS, "headers": [],
                    "client": (client, 50000)})  # fmt: skip


def test_without_a_key_only_this_machine_is_answered(serve) -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        assert refusal(scope(host), ()) is None, host
    refused = refusal(scope("192.0.2.7"), ())
    assert refused is not None and refused.status_code == 403
    assert json.loads(refused.body)["error"]["code"] == "console_local_only"

    app = create_app(state=api_state())

    async def from_another_machine() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://status") as client:
            return [await client.get(path) for path in (STATUS, EVENTS, "/console/status")]

    api, feed, page = asyncio.run(from_another_machine())
    assert api.status_code == 403 and feed.status_code == 403
    assert "set [server] api_key" in api.json()["error"]["message"]
    assert page.status_code == 200  # the page itself, to ask for a key
    assert httpx.get(f"http://{serve(app)}{STATUS}", timeout=10).status_code == 200  # loopback


def test_the_llm_probe_is_kept_for_the_status(serve) -> None:
    reachable = AppState(default_config(llm_url=f"http://{serve(ChatServer().app)}/v1"))
    asyncio.run(lifecycle._probe(reachable))  # a 404 for /v1/models: it is there
    assert status.snapshot(reachable)["backends"]["llm"]["reachable"] is True
    down = AppState(default_config(llm_url=f"http://127.0.0.1:{free_port()}/v1"))
    assert status.snapshot(down)["backends"]["llm"]["reachable"] is None  # not probed yet
    asyncio.run(lifecycle._probe(down))
    assert status.snapshot(down)["backends"]["llm"] == {
        "platform": "openai_chat",
        "model": None,
        "reachable": False,
    }


def test_a_device_turn_is_in_the_feed_and_the_status(serve, whisper, speaker) -> None:
    chat = ChatServer()
    chat.reply(ANSWER)
    addr = serve(embedded_app(serve(chat.app), whisper, speaker))

    async def run() -> tuple[dict, dict, dict]:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", f"http://{addr}{EVENTS}") as response,
        ):
            events = sse(response)
            first = await next_event(events, "snapshot")
            assert first["turns"] == [] and first["server"]["status_feeds"] == 1
            device = await Device.open(addr, "dev-status-1")
            await device.command("Text", input=QUESTION)
            await device.until("EndResponse")
            turn = await next_event(events, "turn")
            while True:  # the device, after its turn
                now = await next_event(events, "status")
                if now["devices"] and now["devices"][0]["turns"] == 1:
                    break
            await device.close()
            while True:
                left = await next_event(events, "status")
                if left["devices"][0]["state"] == "disconnected":
                    break
            return turn, now, left

    turn, now, left = asyncio.run(run())
    assert turn["device"] == "dev-status-1" and turn["turn"] == 1 and turn["outcome"] == "ok"
    assert turn["seq"] == 1 and turn["segments"] == 2 and abs(turn["at"] - time.time()) < 60
    assert list(turn["ms"]) == TEXT_STAGES  # in the order of STAGES, those reached
    offsets = [turn["ms"][s] for s in TEXT_STAGES]
    assert offsets == sorted(offsets) and offsets[0] > 0
    assert now["devices"] == [
        {
            "id": "dev-status-1",
            "connected": True,
            "front_end": "echokit",
            "state": "idle",
            "turns": 1,
            "since": now["devices"][0]["since"],
        }
    ]
    assert left["devices"][0]["connected"] is False and left["devices"][0]["front_end"] is None
    assert now["outcomes"] == {"ok": 1}

    body = httpx.get(f"http://{addr}{STATUS}", timeout=10).json()
    assert body["turns"] == [turn]
    assert body["server"]["state"] == "ready" and body["server"]["status_feeds"] == 0
    assert body["backends"]["asr"]["platform"] == "local"
    tts = body["engines"]["tts"]
    assert tts["streams"] == speaker.admission.streams and tts["active"] == 0
    assert body["engines"]["asr"] == {
        "model": whisper.model_id,
        "pending": 0,
        "limit": whisper.max_pending + 1,
    }
    text = json.dumps(body)
    assert QUESTION not in text and "The sea" not in text  # no transcripts, no answers


# -- the feed's life ------------------------------------------------------------------------


def test_a_feed_that_leaves_is_dropped_and_a_quiet_one_gets_heartbeats(serve, monkeypatch):
    monkeypatch.setattr(status, "HEARTBEAT_S", 0.5)
    addr = serve(create_app(state=api_state()))

    async def run() -> None:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", f"http://{addr}{EVENTS}") as b,
        ):
            kept = sse(b)
            assert (await next_event(kept, "snapshot"))["server"]["status_feeds"] == 1
            async with client.stream("GET", f"http://{addr}{EVENTS}") as a:
                leaving = sse(a)  # (kept: dropping the iterator would close the stream)
                first = await next_event(leaving, "snapshot")
                assert first["server"]["status_feeds"] == 2
                assert (await next_event(kept, "status"))["server"]["status_feeds"] == 2
            # the first feed's client left: its feed ended and is not counted
            assert (await next_event(kept, "status"))["server"]["status_feeds"] == 1
            assert await next_event(kept, "comment", timeout=10) == "ping"

    asyncio.run(run())


def test_sigterm_ends_the_feed_at_once_and_serve_exits_0(tmp_path) -> None:
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(API_ONLY.replace("127.0.0.1:0", f"127.0.0.1:{port}"))

    async def run(proc) -> tuple[list[str], float]:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", f"http://127.0.0.1:{port}{EVENTS}") as response,
        ):
            events = sse(response)
            await next_event(events, "snapshot")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            seen = [kind async for kind, _ in events]  # until the stream ends
            return seen, time.monotonic() - t0

    with serve_process(str(cfg)) as sp:
        seen, took = asyncio.run(run(sp.proc))
        assert seen[-1] == "closing", seen
        assert sp.proc.wait(timeout=30) == 0
    assert took < 5, took  # nothing waited for the feed


# -- the page ---------------------------------------------------------------------------------


def test_the_page_shows_a_browser_device_and_its_turn_live(
    serve, browser, whisper, speaker, tmp_path
) -> None:
    chat = ChatServer()
    chat.reply(ANSWER)
    app = embedded_app(serve(chat.app), whisper, speaker)
    addr = serve(app)
    watch = browser.new_context(viewport=PHONE)
    talk = browser.new_context(viewport=PHONE)
    try:
        page = watch.new_page()
        page.goto(f"http://{addr}/console/status")
        page.wait_for_function("() => window.echokitStatus.state === 'live'", timeout=WAIT_MS)
        assert page.get_by_role("status").inner_text() == "Live"
        assert page.get_by_text("No device has connected yet.").is_visible()
        assert page.get_by_text("No turn yet.").is_visible()
        page.evaluate("window.notReloaded = true")

        # another tab is a device: the talk page, typing (no microphone)
        device = talk.new_page()
        device.goto(f"http://{addr}/")
        device.get_by_label("Type a message").fill(QUESTION)
        device.get_by_role("button", name="Send").click()
        device.wait_for_function("() => window.echokitStats.turns === 1", timeout=WAIT_MS)
        device_id = device.locator("#device").inner_text()

        page.wait_for_selector("#turns li.turn", timeout=WAIT_MS)
        card = page.locator(f'#devices li[data-device="{device_id}"]')
        card.wait_for(timeout=WAIT_MS)
        assert page.evaluate("window.notReloaded && window.echokitStatus.snapshots") == 1
        assert "echokit" in card.inner_text() and "1 turn" in card.inner_text()

        record = httpx.get(f"http://{addr}{STATUS}", timeout=10).json()["turns"][-1]
        table = page.get_by_role("table")
        assert device_id in table.locator("caption").inner_text()
        assert "ok" in table.locator("caption").inner_text()
        labels = {"llm_first": "first LLM token", "tts_first": "first TTS audio",
                  "first_frame": "first frame", "last_frame": "last frame"}  # fmt: skip
        rows = table.locator("tbody tr")
        assert rows.count() == len(TEXT_STAGES)
        for i, stage in enumerate(TEXT_STAGES):
            row = rows.nth(i)
            assert row.locator("th").inner_text() == labels[stage]
            shown = row.locator("td.at").inner_text()  # the time as text, not only a bar
            value = record["ms"][stage]
            expected = f"{value / 1000:.2f} s" if value >= 1000 else f"{round(value)} ms"
            assert shown == expected, (stage, shown, value)
            width = row.locator(".bar").evaluate("b => b.getBoundingClientRect().width")
            assert width > 0
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, "status")

        device.get_by_role("button", name="End conversation").click()  # the device leaves
        card.locator('.badge[data-state="disconnected"]').wait_for(timeout=WAIT_MS)
        assert page.evaluate("window.echokitStatus.snapshots") == 1
    finally:
        talk.close()
        watch.close()  # its feed ends before the server stops


def test_the_page_asks_for_the_key_and_keeps_it_for_the_tab(serve, browser) -> None:
    addr = serve(create_app(state=with_key()))
    context = browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(f"http://{addr}/console/status")
        page.wait_for_function("() => window.echokitStatus.state === 'locked'", timeout=WAIT_MS)
        assert "asks for its API key" in page.get_by_role("alert").inner_text()
        page.get_by_label("API key").fill("wrong")
        page.get_by_role("button", name="Use key").click()
        page.wait_for_function(
            "() => window.echokitStatus.errors.some(e => e.includes('refused this API key'))",
            timeout=WAIT_MS,
        )
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Use key").click()
        page.wait_for_function("() => window.echokitStatus.state === 'live'", timeout=WAIT_MS)
        assert page.get_by_role("alert").is_hidden() and page.locator("#key-form").is_hidden()
        assert "gemini" in page.locator("#health").inner_text()
        page.reload()  # the key is kept for this tab
        page.wait_for_function("() => window.echokitStatus.state === 'live'", timeout=WAIT_MS)
    finally:
        context.close()

"""The talk page (``GET /``, echokit_fast/devices/web) in a real headless Chromium.

* Every file the page loads is served with its content type and no-cache, and names no other
  host: the page works offline.
* A spoken question, from a fake microphone fed by a WAV of the embedded TTS, goes through the
  page's AudioWorklet to the server's embedded VAD and Whisper, a stand-in LLM answers, and the
  page shows the final transcript and the reply and plays its audio; every request the browser
  made went to the server itself.
* Barge-in: the button during a reply stops its playback and cancels the answer (the LLM's
  stream is closed), and the page listens again.
* Push to talk (Submit mode, on a socket reopened when the mode changes): what is said while
  the button is held, silence first, is heard whole.
* Typed text (the Text command) holds a turn without the microphone.
* The device checks (the page's ``?token=``), a refusal, a denied microphone and a server
  that goes away are said on the page.

Chromium is Debian's (scripts/setup.sh), driven by Playwright (never its own browser download).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the Hugging Face hub in tests

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from asr_helpers import wer
from harness import LoopbackServer
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from standins import ChatServer

from echokit_fast import audio
from echokit_fast.config import default_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

#: the tests that depend on what Whisper hears: re-run under each forced CPU ISA by
#: scripts/test.sh
asr_quality = pytest.mark.asr_quality

SR = 16000
CHROMIUM = "/usr/bin/chromium"
QUESTION = "What is the capital of France?"
PHONE = {"width": 390, "height": 844}  # the viewport of every page: a phone's screen
WAIT_MS = 60_000  # the longest wait for one page condition (a whole turn on a slow machine)


@pytest.fixture(scope="module")
def question(speaker) -> np.ndarray:
    return speaker.synthesize(QUESTION, sample_rate=SR)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


def chromium(pw: Playwright, wav: Path, samples: np.ndarray) -> Browser:
    """Chromium whose microphone says `samples` once (then silence), permission granted."""
    wav.write_bytes(audio.write_wav(samples, SR))
    return pw.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory, playwright, question) -> Iterator[Browser]:
    """The microphone says QUESTION at once."""
    samples = np.concatenate([question, np.zeros(4 * SR, np.float32)])
    browser = chromium(playwright, tmp_path_factory.mktemp("mic") / "question.wav", samples)
    yield browser
    browser.close()


#: the silence before the question of `late_browser`
LATE_S = 3.0


@pytest.fixture(scope="module")
def late_browser(tmp_path_factory, playwright, question) -> Iterator[Browser]:
    """The microphone says QUESTION after LATE_S seconds of silence."""
    silence = np.zeros(int(LATE_S * SR), np.float32)
    samples = np.concatenate([silence, question, silence])
    browser = chromium(playwright, tmp_path_factory.mktemp("mic") / "late.wav", samples)
    yield browser
    browser.close()


def embedded_app(chat_addr: str, whisper, speaker):
    ctx = AppState(default_config(llm_url=f"http://{chat_addr}/v1"))
    ctx.asr, ctx.tts = whisper, speaker  # the engines the config asks for, already loaded
    ctx.record_dir = Path("/nonexistent")
    return create_app(state=ctx)


#: a microphone the user refused: getUserMedia rejects as the browser does then
DENY_MIC = """navigator.mediaDevices.getUserMedia = () =>
    Promise.reject(new DOMException("Permission denied", "NotAllowedError"));"""


def open_page(
    browser: Browser, addr: str, *, query: str = "", deny_mic: bool = False
) -> tuple[Page, list[str]]:
    """The talk page in a fresh context (a new device id); the URLs of every request it makes."""
    page = browser.new_context(viewport=PHONE).new_page()
    if deny_mic:
        page.add_init_script(DENY_MIC)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: requests.append(ws.url))
    page.goto(f"http://{addr}/{query}")
    return page, requests


def stats(page: Page, key: str):
    return page.evaluate(f"window.echokitStats.{key}")


def test_page_files_are_local_with_content_types(serve) -> None:
    client = httpx.Client(base_url=f"http://{serve(create_app(state=AppState()))}")
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    files = re.findall(r'(?:src|href)="([^"]+)"', html)
    pages = {"./", "console/status", "console/config"}  # the links between the console's pages
    assert set(files) == {"console/static/console.css", "console/static/talk.js", *pages}
    files = [name for name in files if name not in pages]
    # the modules the page imports, and the worklet it loads
    files += ["console/static/msgpack.js", "console/static/mic-worklet.js"]
    types = {".css": "text/css", ".js": "text/javascript"}
    for name in files:
        r = client.get("/" + name)
        assert r.status_code == 200, name
        assert r.headers["content-type"].split(";")[0] == types[Path(name).suffix], name
        assert r.headers["cache-control"] == "no-cache"
        assert (
            client.get("/" + name, headers={"if-none-match": r.headers["etag"]}).status_code == 304
        )
    talk = client.get("/console/static/talk.js").text
    assert 'from "./msgpack.js"' in talk and '"mic-worklet.js"' in talk
    for text in [html] + [client.get("/" + name).text for name in files]:
        # no absolute URL, nor a protocol-relative one in a string or url()
        assert not re.search(r"(?i)\b(?:https?|wss?)://|[\"'(]//\w", text)


@asr_quality
def test_spoken_question_through_the_page(serve, browser, whisper, speaker, tmp_path) -> None:
    chat = ChatServer()
    answer = "The capital of France is Paris. It is famous for the Eiffel Tower."
    chat.reply(["The capital of France is Paris. ", "It is famous for the Eiffel Tower."])
    addr = serve(embedded_app(serve(chat.app), whisper, speaker))
    page, requests = open_page(browser, addr)
    assert page.get_by_role("button", name="Start conversation").is_visible()

    page.get_by_role("button", name="Start conversation").click()
    page.wait_for_function("() => window.echokitStats.transcripts.length > 0", timeout=WAIT_MS)
    heard = stats(page, "transcripts")[0]
    assert wer(QUESTION, heard) <= 0.25, heard

    # the reply played through, then the page listens for the next question
    page.wait_for_function("() => window.echokitStats.turns === 1", timeout=WAIT_MS)
    # (asked after the reply: the transcript reaches the page before the LLM has the request)
    assert chat.requests[-1].json["messages"][-1]["content"] == heard
    assert stats(page, "state") == "listening"
    assert stats(page, "replies") == [answer]
    assert stats(page, "playedSamples") > 2 * SR  # seconds of the reply's speech
    assert stats(page, "opus") and stats(page, "vowels") > 0  # WebCodecs' Opus, the mouth
    assert stats(page, "errors") == []
    log = page.locator("#log").inner_text()
    assert heard in log and answer in log
    page.screenshot(path=str(tmp_path / "talk.png"), full_page=True)
    # it fits a phone's screen: nothing wider than it, the controls on it
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for button in ("Listening", "End conversation"):
        box = page.get_by_role("button", name=button).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], button
        assert box["y"] + box["height"] <= PHONE["height"], button

    own = (f"http://{addr}/", f"ws://{addr}/ws/")
    assert requests and all(url.startswith(own) for url in requests), requests
    sockets = [url for url in requests if url.startswith(own[1])]
    assert len(sockets) == 1 and "opus=true" in sockets[0] and "vowel=true" in sockets[0]


def test_button_during_the_reply_interrupts_it(serve, browser, whisper, speaker, tmp_path) -> None:
    chat = ChatServer()
    # an answer that never ends: one more sentence every half second
    chat.reply(["The capital of France is Paris. "], forever="It is lovely. ", delay=0.5)
    addr = serve(embedded_app(serve(chat.app), whisper, speaker))
    page, _ = open_page(browser, addr)

    page.get_by_role("button", name="Start conversation").click()
    page.wait_for_function("() => window.echokitStats.state === 'speaking'", timeout=WAIT_MS)
    page.get_by_role("button", name="Interrupt").click()
    assert stats(page, "state") == "listening"
    shown = stats(page, "replies")
    played = stats(page, "playedSamples")

    assert chat.disconnected.wait(30)  # the answer was cancelled: its LLM stream closed
    # the new utterance (silence) is ended by the server, and the page listens again
    page.wait_for_function(
        "() => window.echokitStats.turns === 1 || window.echokitStats.errors.length > 0",
        timeout=WAIT_MS,
    )
    assert stats(page, "state") == "listening"
    page.screenshot(path=str(tmp_path / "interrupted.png"), full_page=True)
    assert stats(page, "errors") == []
    assert stats(page, "replies") == shown  # nothing of the cancelled answer shown after
    assert stats(page, "playedSamples") == played  # nor played


def test_device_token_from_the_page_address_and_clear_errors(
    serve, browser, whisper, speaker
) -> None:
    app = embedded_app(serve(ChatServer().app), whisper, speaker)
    server = app.state.echokit.config.server
    app.state.echokit.config.server = server.model_copy(update={"device_token": "t0k"})
    addr = serve(app)

    page, _ = open_page(browser, addr, query="?token=t0k")  # the page passes it on
    page.get_by_role("button", name="Start conversation").click()
    page.wait_for_function("() => window.echokitStats.state === 'listening'", timeout=WAIT_MS)
    assert page.get_by_role("button", name="End conversation").is_visible()

    page, _ = open_page(browser, addr)  # refused (401): said at once, no retries
    page.get_by_role("button", name="Start conversation").click()
    page.wait_for_function("() => window.echokitStats.state === 'error'", timeout=WAIT_MS)
    assert "device_token" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("button", name="Start conversation").is_visible()

    page, _ = open_page(browser, addr, query="?token=t0k", deny_mic=True)
    page.get_by_role("button", name="Start conversation").click()
    page.wait_for_function("() => window.echokitStats.state === 'error'", timeout=WAIT_MS)
    assert "Microphone access was denied" in page.get_by_role("alert").inner_text()


@asr_quality
def test_push_to_talk_sends_what_is_said_while_held(
    serve, late_browser, whisper, speaker, question, tmp_path
) -> None:
    chat = ChatServer()
    answer = "The capital of France is Paris."
    chat.reply([answer])
    addr = serve(embedded_app(serve(chat.app), whisper, speaker))
    page, requests = open_page(late_browser, addr, query="?opus=false")  # raw PCM replies
    page.get_by_role("button", name="Start conversation").click()  # hands-free
    page.wait_for_function("() => window.echokitStats.state === 'listening'", timeout=WAIT_MS)
    page.get_by_label("Push to talk").check()  # the socket reopened, in Submit mode
    page.wait_for_function(
        "() => window.echokitStats.sockets === 2 && window.echokitStats.state === 'listening'",
        timeout=WAIT_MS,
    )
    sockets = [url.split("?")[1] for url in requests if url.startswith("ws:")]
    assert sockets == [
        "opus=false&stream_asr=true&reconnect=false",
        "opus=false&stream_asr=false&reconnect=true",
    ]

    page.get_by_role("button", name="Hold to talk").hover()
    page.mouse.down()  # before the question (LATE_S of silence first): the server waits
    assert page.get_by_role("button", name="Release to send").is_visible()
    # held through the question: its silence before, itself and 0.3 s after it went out
    sent = int(LATE_S * SR) + len(question) + int(0.3 * SR)
    page.wait_for_function(f"() => window.echokitStats.sentSamples >= {sent}", timeout=WAIT_MS)
    page.mouse.up()  # Submit
    page.wait_for_function("() => window.echokitStats.turns === 1", timeout=WAIT_MS)
    heard = stats(page, "transcripts")
    assert len(heard) == 1 and wer(QUESTION, heard[0]) <= 0.25, heard
    assert stats(page, "replies") == [answer]
    assert stats(page, "playedSamples") > SR
    assert page.get_by_role("button", name="Hold to talk").is_visible()
    page.screenshot(path=str(tmp_path / "push-to-talk.png"), full_page=True)


def test_a_server_that_goes_away_is_said(serve, browser, whisper, speaker) -> None:
    server = LoopbackServer(embedded_app(serve(ChatServer().app), whisper, speaker))
    try:
        page, _ = open_page(browser, server.addr)
        page.get_by_role("button", name="Start conversation").click()
        page.wait_for_function("() => window.echokitStats.state === 'listening'", timeout=WAIT_MS)
        server.stop()
        page.wait_for_function(
            "() => window.echokitStats.state === 'reconnecting'", timeout=WAIT_MS
        )
        assert "Lost the connection to the server" in page.get_by_role("alert").inner_text()
        assert page.get_by_role("button", name="End conversation").is_visible()
        page.get_by_role("button", name="End conversation").click()  # no more attempts
        assert stats(page, "state") == "idle"
    finally:
        server.stop()


def test_typed_text_without_the_microphone(serve, browser, whisper, speaker) -> None:
    chat = ChatServer()
    answer = "Hello! How can I help you today?"
    chat.reply([answer])
    addr = serve(embedded_app(serve(chat.app), whisper, speaker))
    page, _ = open_page(browser, addr, deny_mic=True)  # never asked for: no error
    page.get_by_label("Type a message").fill("Hello there")
    page.get_by_role("button", name="Send").click()  # starts a conversation, text only
    page.wait_for_function("() => window.echokitStats.turns === 1", timeout=WAIT_MS)
    assert chat.requests[-1].json["messages"][-1]["content"] == "Hello there"
    assert stats(page, "transcripts") == ["Hello there"]
    assert stats(page, "replies") == [answer]
    assert stats(page, "playedSamples") > SR
    assert stats(page, "errors") == []

"""The talk page (``GET /``, echokit_fast/devices/web) in a real headless Chromium.

* Every file the page loads is served with its content type and no-cache, and names no other
  host: the page works offline.
* A spoken question, from a fake microphone fed by a WAV of the embedded TTS, goes through the
  page's AudioWorklet to the server's embedded VAD and Whisper, a stand-in LLM answers, and the
  page shows the final transcript and the reply and plays its audio; every request the browser
  made went to the server itself.
* Barge-in: the button during a reply stops its playback and cancels the answer (the LLM's
  stream is closed), and the page listens again; so does the user's voice over the reply in
  hands-free mode, and what it says is the next turn; a quiet voice (as the reply's echo
  could be) does not.
* Push to talk (Submit mode, on a socket reopened when the mode changes): what is said while
  the button is held, silence first, is heard whole.
* Typed text (the Text command) holds a turn without the microphone.
* A question of the server (Choices, from the claude layout over a stand-in EchoKit-CC) is
  shown as buttons; the one pressed is sent as Select, and they go when the turn ends.
* Record mode: the microphone saved on the server, the file listed on the page and
  downloaded from it; the recordings' JSON routes, their path checks and access rule.
* The links between the console's pages; the JSON 404 of an unknown ``/console/api/`` path.
* The device checks (the page's ``?token=``), a refusal, a denied microphone and a server
  that goes away are said on the page.

Chromium is Debian's (scripts/setup.sh), driven by Playwright (never its own browser download).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the Hugging Face hub in tests

import io
import re
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from asr_helpers import wer
from cc_standin import IDLE_MSG, ClaudeCC, output
from harness import LoopbackServer
from pages import CHROMIUM, PHONE, screenshot
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from standins import ASRServer, ChatServer, TTSServer
from ws_standins import running_ws_server

from echokit_fast import audio
from echokit_fast.config import default_config, parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

#: the tests that depend on what Whisper hears: re-run under each forced CPU ISA by
#: scripts/test.sh
asr_quality = pytest.mark.asr_quality

SR = 16000
QUESTION = "What is the capital of France?"
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


#: what the user says over the reply in the barge-in test, and the silence before it: long
#: enough for the first reply to be playing by then (it starts about a second after the
#: question)
SECOND = "Tell me about Berlin instead."
PAUSE_S = 4.0


@pytest.fixture(scope="module")
def barge_browser(tmp_path_factory, playwright, question, speaker) -> Iterator[Browser]:
    """The microphone says QUESTION, then after PAUSE_S seconds SECOND."""
    second = speaker.synthesize(SECOND, sample_rate=SR)
    pause = np.zeros(int(PAUSE_S * SR), np.float32)
    samples = np.concatenate([question, pause, second, np.zeros(4 * SR, np.float32)])
    browser = chromium(playwright, tmp_path_factory.mktemp("mic") / "barge.wav", samples)
    yield browser
    browser.close()


#: how loud the voice of `echo_browser` is, as a part of QUESTION's: what a reply's echo left
#: over by the browser's echo cancellation could be, and more
ECHO_GAIN = 0.15


@pytest.fixture(scope="module")
def echo_browser(tmp_path_factory, playwright, question) -> Iterator[Browser]:
    """The microphone says QUESTION, then from half a second after it for three times its
    length, while the reply plays, a quiet voice (QUESTION again, ECHO_GAIN as loud)."""
    gap = np.zeros(SR // 2, np.float32)
    quiet = np.concatenate([ECHO_GAIN * question, gap] * 3)
    samples = np.concatenate([question, gap, quiet, np.zeros(4 * SR, np.float32)])
    browser = chromium(playwright, tmp_path_factory.mktemp("mic") / "echo.wav", samples)
    yield browser
    browser.close()


def embedded_app(chat_addr: str, whisper, speaker, record_dir: Path = Path("/nonexistent")):
    ctx = AppState(default_config(llm_url=f"http://{chat_addr}/v1"))
    ctx.asr, ctx.tts = whisper, speaker  # the engines the config asks for, already loaded
    ctx.record_dir = record_dir
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
    files = re.findall(r'(?:src|href)="(console/static/[^"]+)"', html)
    assert set(files) == {"console/static/console.css", "console/static/talk.js"}
    links = re.findall(r'<a href="([^"]+)"', html)  # the nav between the console's pages
    assert {"./", "console/status", "console/config"} <= set(links)
    # the modules the page imports, and the worklet it loads
    modules = ["msgpack.js", "mic.js", "record.js", "mic-worklet.js"]
    files += [f"console/static/{name}" for name in modules]
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
    assert all(f'from "./{name}"' in talk for name in ("msgpack.js", "mic.js", "record.js"))
    assert '"mic-worklet.js"' in client.get("/console/static/mic.js").text
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
    screenshot(page, "talk")
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
    screenshot(page, "interrupted")
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
    screenshot(page, "push-to-talk")


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


@asr_quality
def test_speaking_over_the_reply_interrupts_it(serve, barge_browser, whisper, speaker) -> None:
    chat = ChatServer()
    # the first answer never ends (one more sentence every half second); the second does
    chat.reply(["The capital of France is Paris. "], forever="It is lovely. ", delay=0.5)
    answer = "Berlin is the capital of Germany."
    chat.reply([answer])
    addr = serve(embedded_app(serve(chat.app), whisper, speaker))
    page, _ = open_page(barge_browser, addr)
    page.get_by_role("button", name="Start conversation").click()  # hands-free

    page.wait_for_function("() => window.echokitStats.bargeIns === 1", timeout=WAIT_MS)
    cut = stats(page, "replies")
    assert len(cut) == 1 and cut[0].startswith("The capital of France is Paris.")
    assert stats(page, "playedSamples") > 0  # it was playing
    assert chat.disconnected.wait(30)  # the answer was cancelled: its LLM stream closed
    # what was said over it is the next turn, heard whole, and answered
    page.wait_for_function(
        "() => window.echokitStats.turns === 1 || window.echokitStats.errors.length > 0",
        timeout=WAIT_MS,
    )
    assert stats(page, "errors") == []
    heard = stats(page, "transcripts")
    assert len(heard) == 2 and wer(QUESTION, heard[0]) <= 0.25, heard
    assert wer(SECOND, heard[1]) <= 0.25, heard
    assert chat.requests[-1].json["messages"][-1]["content"] == heard[1]
    assert stats(page, "replies") == [cut[0], answer]  # nothing more of the cut answer shown
    assert stats(page, "bargeIns") == 1 and stats(page, "state") == "listening"


def test_a_quiet_voice_over_the_reply_does_not_cut_it(
    serve, echo_browser, whisper, speaker
) -> None:
    chat = ChatServer()
    sentences = [
        "The capital of France is Paris. ",
        "It is famous for the Eiffel Tower. ",
        "Millions of people visit it every year.",
    ]
    chat.reply(sentences)
    addr = serve(embedded_app(serve(chat.app), whisper, speaker))
    page, _ = open_page(echo_browser, addr)
    page.get_by_role("button", name="Start conversation").click()
    page.wait_for_function(
        "() => window.echokitStats.turns === 1 || window.echokitStats.errors.length > 0",
        timeout=WAIT_MS,
    )
    assert stats(page, "errors") == []
    assert stats(page, "bargeIns") == 0
    assert stats(page, "replies") == ["".join(sentences)]
    assert stats(page, "playedSamples") > 5 * SR  # the whole reply played
    assert len(chat.requests) == 1  # nothing was taken for a new question


@pytest.fixture
def claude_app(serve, tmp_path) -> Iterator[tuple[ClaudeCC, str]]:
    """The claude layout over a stand-in EchoKit-CC, ASR and TTS: the stand-in and the
    server's address."""
    standin = ClaudeCC()
    with running_ws_server(standin) as cc_addr:
        asr, tts = serve(ASRServer().app), serve(TTSServer().app)
        text = (
            'addr = "127.0.0.1:0"\n'
            f'[claude]\nurl = "ws://{cc_addr}/ws/"\n'
            f'[asr]\nplatform = "openai"\nurl = "http://{asr}/v1/audio/transcriptions"\n'
            f'[tts]\nplatform = "stream_gsv"\nurl = "http://{tts}/v1/audio/stream_speech"\n'
            'speaker = "cooper"\n'
        )
        state = AppState(parse_config(text, log_issues=False).config)
        state.record_dir = tmp_path / "record"
        yield standin, serve(create_app(state=state))


def test_a_question_of_the_server_as_buttons(claude_app, browser) -> None:
    standin, addr = claude_app
    spoken = "There are two files."
    standin.answer(output(spoken), IDLE_MSG)
    page, _ = open_page(browser, addr, deny_mic=True)
    page.get_by_label("Type a message").fill("List the files.")
    page.get_by_role("button", name="Send").click()
    # the layout asks to confirm the words: Choices{"List the files.", ["Confirm", "Cancel"]}
    page.wait_for_function("() => window.echokitStats.choices !== null", timeout=WAIT_MS)
    question = page.get_by_role("group", name="List the files.")
    assert question.get_by_role("button").all_inner_texts() == ["Confirm", "Cancel"]
    assert standin.messages() == ["CreateSession"]  # nothing is sent before the Select

    question.get_by_role("button", name="Confirm").click()  # Select{0}
    assert stats(page, "selected") == [0]
    assert page.locator(".choices").count() == 0
    page.wait_for_function("() => window.echokitStats.turns === 1", timeout=WAIT_MS)
    (conn,) = standin.connections
    assert conn.texts[:3] == [
        '{"type":"CreateSession"}',
        '{"type":"Input","input":"List the files."}',
        '{"type":"Confirm"}',
    ]
    assert stats(page, "replies") == [spoken]
    assert stats(page, "errors") == []


def test_a_question_goes_with_its_turn(claude_app, browser) -> None:
    standin, addr = claude_app
    page, _ = open_page(browser, addr, deny_mic=True)
    page.get_by_label("Type a message").fill("Delete the logs.")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function("() => window.echokitStats.choices !== null", timeout=WAIT_MS)
    # another message instead of an answer: a new turn, the question's buttons gone
    page.get_by_label("Type a message").fill("Never mind.")
    page.get_by_role("button", name="Send").click()
    # (the next turn's own question may be there already: the server can be that quick)
    assert page.get_by_role("group", name="Delete the logs.").count() == 0
    page.wait_for_function(
        "() => window.echokitStats.choices !== null && "
        "document.querySelector('.choices').getAttribute('aria-label') === 'Never mind.'",
        timeout=WAIT_MS,
    )
    assert page.locator(".choices").count() == 1
    page.get_by_role("button", name="Cancel").click()  # Select{1}: the input is cancelled
    page.wait_for_function("() => window.echokitStats.turns === 1", timeout=WAIT_MS)
    assert stats(page, "selected") == [1]
    assert stats(page, "choices") is None and page.locator(".choices").count() == 0
    assert "Input" not in standin.messages()


def test_record_mode_saves_the_microphone(serve, browser, whisper, speaker, question, tmp_path):
    root = tmp_path / "record"
    addr = serve(embedded_app(serve(ChatServer().app), whisper, speaker, record_dir=root))
    page, requests = open_page(browser, addr)
    page.get_by_role("radio", name="Record").check()
    assert page.get_by_role("heading", name="Recordings").is_visible()
    assert not page.get_by_label("Type a message").is_visible()  # nothing to say to a recorder
    page.wait_for_function(
        "() => document.getElementById('recordings-note').textContent === 'No recordings yet.'"
    )
    page.get_by_role("button", name="Start recording").click()
    page.wait_for_function("() => window.echokitStats.state === 'recording'", timeout=WAIT_MS)
    assert page.get_by_role("status").inner_text() == "Recording"
    # recorded through the question and half a second after it
    enough = len(question) + SR // 2
    page.wait_for_function(
        f"() => window.echokitStats.recordedSamples >= {enough}", timeout=WAIT_MS
    )
    page.get_by_role("button", name="Stop recording").click()
    assert stats(page, "state") == "idle"
    recorded = stats(page, "recordedSamples")
    page.wait_for_function(
        "() => window.echokitStats.recordings.length === 1 && "
        "window.echokitStats.recordings[0].finished",
        timeout=WAIT_MS,
    )
    (entry,) = stats(page, "recordings")
    device = page.locator("#device").inner_text()
    assert entry["device"] == device and entry["name"].startswith("record_")
    assert entry["bytes"] == 44 + 2 * recorded  # every sample sent was saved
    assert abs(entry["seconds"] - recorded / SR) < 1e-6
    sockets = [url for url in requests if url.startswith("ws:")]
    assert sockets == [f"ws://{addr}/ws/{device}?record=true"]

    with page.expect_download() as download:
        page.get_by_role("link", name=entry["name"]).click()
    assert download.value.suggested_filename == entry["name"]
    data = Path(download.value.path()).read_bytes()
    assert data == (root / device / entry["name"]).read_bytes()
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2)
        assert w.getnframes() == recorded
        pcm = np.frombuffer(w.readframes(recorded), np.int16).astype(np.float32) / 32768
    # the question is in it: as loud as it, not silence
    level = float(np.sqrt(np.mean(pcm**2)))
    assert level > 0.3 * float(np.sqrt(np.mean(question**2))), level


def _wav(seconds: float) -> bytes:
    return audio.write_wav(np.full(int(seconds * SR), 0.1, np.float32), SR)


def test_the_recordings_api(serve, tmp_path) -> None:
    root = tmp_path / "record"
    (root / "dev1").mkdir(parents=True)
    (root / "dev2").mkdir()
    (root / "dev1" / "record_a.wav").write_bytes(_wav(1.5))
    # a recording still being written: the header's streaming sizes
    growing = bytearray(_wav(0.5))
    growing[40:44] = b"\xff\xff\xff\xff"
    (root / "dev1" / "record_b.wav").write_bytes(bytes(growing))
    (root / "dev1" / "notes.txt").write_text("not a recording")
    (root / "dev2" / "record_c.wav").write_bytes(_wav(0.25))
    (tmp_path / "secret.wav").write_bytes(_wav(0.1))
    (root / "dev1" / "escape.wav").symlink_to(tmp_path / "secret.wav")
    state = AppState()
    state.record_dir = root
    client = httpx.Client(base_url=f"http://{serve(create_app(state=state))}")

    r = client.get("/console/api/recordings", params={"device": "dev1"})
    assert r.status_code == 200
    found = {e["name"]: e for e in r.json()["recordings"]}
    assert sorted(found) == ["escape.wav", "record_a.wav", "record_b.wav"]
    a = found["record_a.wav"]
    assert a["device"] == "dev1" and a["bytes"] == 44 + 2 * int(1.5 * SR)
    assert a["seconds"] == 1.5 and a["finished"] is True
    assert a["url"] == "/console/api/recordings/dev1/record_a.wav"
    assert found["record_b.wav"]["finished"] is False
    everyone = client.get("/console/api/recordings").json()["recordings"]
    assert {(e["device"], e["name"]) for e in everyone} >= {("dev2", "record_c.wav")}
    assert client.get("/console/api/recordings", params={"device": "nobody"}).json() == {
        "recordings": []
    }
    assert client.get("/console/api/recordings", params={"device": "../x"}).status_code == 400

    r = client.get(a["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.content == (root / "dev1" / "record_a.wav").read_bytes()
    for path in (
        "/console/api/recordings/dev1/notes.txt",  # not a WAV
        "/console/api/recordings/dev1/missing.wav",
        "/console/api/recordings/dev1/escape.wav",  # a link out of the record folder
        "/console/api/recordings/..%2Fdev1/record_a.wav",
        "/console/api/recordings/dev1/..%2F..%2Fsecret.wav",
        "/console/api/recordings/dev1/%2E%2E",
        "/console/api/recordings/.dev1/record_a.wav",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/json", path
        assert r.json()["error"]["type"] == "invalid_request_error", path

    # the console's rule: with a key set, the key
    state.config.server = state.config.server.model_copy(update={"api_key": "k3y"})
    assert client.get("/console/api/recordings").status_code == 401
    assert client.get(a["url"]).status_code == 401
    auth = {"Authorization": "Bearer k3y"}
    assert client.get(a["url"], headers=auth).status_code == 200


def test_unknown_console_api_paths_are_json_404s(serve) -> None:
    client = httpx.Client(base_url=f"http://{serve(create_app(state=AppState()))}")
    r = client.get("/console/api/nothing/here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "error": {
            "message": "Unknown request URL: GET /console/api/nothing/here",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_url",
        }
    }
    r = client.post("/console/api/recordings")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    # elsewhere Starlette's plain text, as before
    r = client.get("/console/nothing")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain")


#: a page fits a phone's width: nothing wider than the viewport (no sideways scrolling)
FITS = "() => document.documentElement.scrollWidth <= window.innerWidth"


def test_links_between_the_console_pages(serve, browser) -> None:
    """The three pages link to each other, and each fits a phone's screen."""
    addr = serve(create_app(state=AppState()))
    page, _ = open_page(browser, addr)
    assert page.evaluate(FITS)
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link").all_inner_texts() == ["Talk", "Status", "Config"]
    assert nav.get_by_role("link", name="Talk").get_attribute("aria-current") == "page"
    nav.get_by_role("link", name="Status").click()
    page.wait_for_url(f"http://{addr}/console/status")
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link").all_inner_texts() == ["Talk", "Status", "Config"]
    assert nav.get_by_role("link", name="Status").get_attribute("aria-current") == "page"
    assert page.evaluate(FITS)
    nav.get_by_role("link", name="Config").click()
    page.wait_for_url(f"http://{addr}/console/config")
    assert page.evaluate(FITS)
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link").all_inner_texts() == ["Talk", "Status", "Config"]
    assert nav.get_by_role("link", name="Config").get_attribute("aria-current") == "page"
    nav.get_by_role("link", name="Talk").click()
    page.wait_for_url(f"http://{addr}/")
    assert page.get_by_role("button", name="Start conversation").is_visible()

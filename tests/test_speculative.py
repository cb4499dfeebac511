"""The speculative reply (docs/architecture.md#speculative-reply): a real device server on
loopback, a websockets client as the EchoKit device, the real ``openai_chat`` conversation
against the Chat Completions stand-in, and a turn detector driven by markers in the audio so
that each test decides where the user pauses, speaks on and ends the turn.

Frames: ``PAUS`` (the user paused: a round starts), ``TALK`` (the user is speaking), ``MORE``
(the user spoke on: speech ended again), ``END!`` (the turn is over); any other frame is audio
that changes nothing (the silence before the end of the turn).
"""

from __future__ import annotations

import asyncio
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from device_fakes import Device, FakeSpeaker, FakeTranscriber, Gate, SentenceSegmenter, name
from standins import ChatServer, ResponsesServer, tool_call
from test_device import TraceLines, on_server, segments

from echokit_fast.backends.base import Backends, Rewindable, Tool
from echokit_fast.backends.llm.openai_chat import ChatBackend, OpenAIChatLLM
from echokit_fast.backends.llm.openai_responses import OpenAIResponsesLLM, ResponsesBackend
from echokit_fast.config import default_config, parse_config
from echokit_fast.conversation.session import Settings
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState
from echokit_fast.turn.detector import TurnEvent

FRAME = 3200  # bytes: 100 ms


def frame(marker: bytes = b"") -> bytes:
    return marker + bytes(FRAME - len(marker))


class MarkerDetector:
    def __init__(self) -> None:
        self.speech_seen = False
        self.speaking = False
        self.speech_end: float | None = None

    async def feed(self, pcm16: bytes) -> list[TurnEvent]:
        self.speech_seen = True
        marker = pcm16[:4]
        self.speaking = marker == b"TALK"
        if marker in (b"PAUS", b"MORE"):
            self.speech_end = time.monotonic()
        if marker == b"PAUS":
            return [TurnEvent.PAUSE]
        return [TurnEvent.END] if marker == b"END!" else []


class MarkerDetectors:
    def prepare(self) -> None:
        pass

    def __call__(self, *, wait_for_speech: bool = False) -> MarkerDetector:
        return MarkerDetector()


def build(serve, tmp_path: Path, *, speaker: FakeSpeaker | None = None, markers: bool = True):
    """The server with the marker detector (else the embedded default's settings: the Silero
    VAD's silence rule, the speculative reply on)."""
    chat = ChatServer()
    chat.addr = serve(chat.app)
    cfg = OpenAIChatLLM.model_validate(
        {"url": f"http://{chat.addr}/v1/chat/completions", "history": 5}
    )
    ctx = AppState(default_config())
    f = SimpleNamespace(chat=chat, transcriber=FakeTranscriber(), speaker=speaker or FakeSpeaker())
    ctx.backends = Backends(f.transcriber, f.speaker, ChatBackend(cfg).conversation)
    if markers:
        ctx.device_settings = Settings(
            turn_detector=MarkerDetectors(), speculative_reply=True, session_ttl=0.0
        )
    ctx.record_dir = tmp_path / "record"
    ctx.segmenter = SentenceSegmenter
    f.addr = serve(create_app(state=ctx))
    f.manager = ctx.sessions
    return f


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def requests(chat: ChatServer, n: int) -> None:
    """Until the stand-in has received ``n`` requests."""
    while len(chat.requests) < n:
        chat.received.clear()
        if len(chat.requests) >= n:
            return
        assert await asyncio.to_thread(chat.received.wait, 20), "no LLM request"


def user_turns(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] != "system"]


async def voice(d: Device, *frames: bytes) -> None:
    for fr in frames:
        await d.ws.send(fr)


# --------------------------------------------------------------------------------------------
# hit
# --------------------------------------------------------------------------------------------


async def pause_then_end(f, device: str, first: Gate | None = None) -> list:
    """A hit: the user pauses (the answer starts), then the turn ends on the same transcript.
    With ``first``, the first clause's synthesis is reached before the turn ends."""
    d = await Device.open(f.addr, device, stream_asr=True)
    await d.command("StartChat")
    await voice(d, frame(), frame(b"PAUS"))
    await requests(f.chat, len(f.chat.requests) + 1)  # asked before the turn ended ...
    if first is not None:
        await first.until_reached()  # ... and the first clause is being synthesised
        first.open()
    await voice(d, frame(), frame(b"END!"))
    events = await d.until()
    await d.close()
    return events


async def pause_then_speak_on(f, device: str) -> list:
    """A miss: the user pauses (the answer starts), speaks on and submits: the final
    transcript is another round's."""
    d = await Device.open(f.addr, device, stream_asr=True)
    await d.command("StartChat")
    await voice(d, frame(), frame(b"PAUS"))
    await requests(f.chat, len(f.chat.requests) + 1)
    await voice(d, frame())  # more speech, no pause: Submit transcribes the whole buffer
    await d.command("Submit")
    events = await d.until()
    await d.close()
    return events


def test_hit_answer_started_at_the_pause_is_released_after_the_turns_events(serve, tmp_path):
    first = Gate()  # the first clause's synthesis: reached before the turn ends
    f = build(serve, tmp_path, speaker=FakeSpeaker(gates={"Hello there.": first}))
    f.chat.reply(["Hello there. ", "How are you?"])

    with TraceLines() as trace:
        events = run(pause_then_end(f, "hit", first))
        line = trace.get()
    names = [name(e) for e in events]
    # nothing of the held answer came before the turn's own events
    assert names[:3] == ["EndVad", "ASR", "StartAudio"], names
    assert events[1] == {"ASR": {"text": f"heard {2 * FRAME // 2}"}}
    assert [t for t, _ in segments(events)] == ["Hello there.", "How are you?"]
    assert names.count("EndResponse") == 1 and names[-1] == "EndResponse"
    assert len(f.chat.requests) == 1  # adopted: no second request
    assert user_turns(f.chat.requests[0].json) == [{"role": "user", "content": "heard 3200"}]
    assert f.speaker.started == ["Hello there.", "How are you?"]
    assert line["speculative"] == "hit" and line["outcome"] == "ok"
    assert line["ms"]["llm_first"] < line["ms"]["end_vad"] < line["ms"]["first_frame"]


def test_hit_with_the_silence_rule_of_the_embedded_default(serve, tmp_path):
    f = build(serve, tmp_path, markers=False)
    f.chat.reply(["Hello there."])
    with wave.open(str(Path(__file__).parent / "data" / "vad_fixture_hello16k.wav")) as w:
        # from 256 ms before the speech (longer silence would end the turn) to right after it
        speech = w.readframes(w.getnframes())[2 * 4096 : 2 * 72000]
    pause = bytes(2 * 6400)  # 400 ms: speech ends (200 ms), a pause, not yet the hangover

    async def main():
        d = await Device.open(f.addr, "vad", stream_asr=True)
        await d.command("StartChat")
        await d.audio(speech + pause, frame=1024)
        await requests(f.chat, 1)  # answered at the pause
        await d.audio(bytes(2 * 16000), frame=1024)  # silence past the hangover: the end
        events = await d.until()
        await d.close()
        return events

    with TraceLines() as trace:
        events = run(main())
        line = trace.get()
    assert [name(e) for e in events][:3] == ["EndVad", "ASR", "StartAudio"]
    assert [t for t, _ in segments(events)] == ["Hello there."]
    assert len(f.chat.requests) == 1 and line["speculative"] == "hit"


def test_switch_on_for_the_embedded_default_off_in_a_config_file():
    on = default_config().asr.vad
    text = 'addr = "0.0.0.0:8080"\n[asr]\nplatform = "local"\n[tts]\nplatform = "local"\n'
    text += '[llm]\nplatform = "openai_chat"\nurl = "http://127.0.0.1:9/v1"\nhistory = 1\n'
    off = parse_config(text).config.asr.vad
    assert on.speculative_reply is True and off.speculative_reply is False
    written = parse_config(text + "[asr.vad]\nspeculative_reply = true\n").config.asr.vad
    assert written.speculative_reply is True


# --------------------------------------------------------------------------------------------
# miss: the user speaks on
# --------------------------------------------------------------------------------------------


def test_speaking_on_drops_the_held_answer_and_leaves_no_history(serve, tmp_path):
    whole = Gate()  # the first answer's only clause: its synthesis never finishes
    f = build(serve, tmp_path, speaker=FakeSpeaker(gates={"First answer.": whole}))
    f.chat.reply(["First answer."])  # read to its end while held
    f.chat.reply(["Second"], forever=" and", delay=0.02)  # never ends
    f.chat.reply(["Final answer."])

    async def main():
        d = await Device.open(f.addr, "miss", stream_asr=True)
        await d.command("StartChat")
        await voice(d, frame(), frame(b"PAUS"))
        await whole.until_reached()  # the first answer was read whole (in the history now)
        await voice(d, frame(b"MORE"), frame(b"PAUS"))  # the user spoke on, paused again
        await requests(f.chat, 2)
        await voice(d, frame(b"MORE"))  # and on again: the second request is cut
        assert await asyncio.to_thread(f.chat.disconnected.wait, 20)
        await voice(d, frame(b"PAUS"))
        await requests(f.chat, 3)
        await voice(d, frame(b"END!"))
        events = await d.until()
        await d.close()
        return events

    with TraceLines() as trace:
        events = run(main())
        line = trace.get()
    names = [name(e) for e in events]
    end = names.index("EndVad")
    assert set(names[:end]) <= {"ASR"}  # interim transcripts only before the end of speech
    final = f"heard {6 * FRAME // 2}"
    assert events[end + 1] == {"ASR": {"text": final}}
    assert names[end + 2] == "StartAudio"
    assert [t for t, _ in segments(events)] == ["Final answer."]  # nothing of the dropped ones
    bodies = [r.json for r in f.chat.requests]
    assert len(bodies) == 3
    # each request holds only its own user message: the completed first answer was rewound
    assert user_turns(bodies[0]) == [{"role": "user", "content": f"heard {2 * FRAME // 2}"}]
    assert user_turns(bodies[1]) == [{"role": "user", "content": f"heard {4 * FRAME // 2}"}]
    assert user_turns(bodies[2]) == [{"role": "user", "content": final}]
    assert f.chat.completed == 2  # the first and the last; the second was cut
    assert "First answer." in f.speaker.cancelled
    assert line["speculative"] == "hit"  # the last pause's answer was adopted


def test_final_transcript_of_another_round_restarts_the_answer(serve, tmp_path):
    f = build(serve, tmp_path)
    f.chat.reply(["Held"], forever=" on", delay=0.02)
    f.chat.reply(["Answer."])

    with TraceLines() as trace:
        events = run(pause_then_speak_on(f, "other"))
        line = trace.get()
    names = [name(e) for e in events]
    assert names[:3] == ["EndVad", "ASR", "StartAudio"]
    final = f"heard {3 * FRAME // 2}"
    assert events[1] == {"ASR": {"text": final}}
    assert [t for t, _ in segments(events)] == ["Answer."]
    assert f.chat.disconnected.is_set() and f.chat.completed == 1
    assert user_turns(f.chat.requests[1].json) == [{"role": "user", "content": final}]
    assert line["speculative"] == "miss"


def test_speech_after_the_pause_drops_the_held_answer_at_once(serve, tmp_path):
    f = build(serve, tmp_path)
    f.chat.reply(["Held"], forever=" on", delay=0.02)
    f.chat.reply(["Answer."])

    async def main():
        d = await Device.open(f.addr, "talk", stream_asr=True)
        await d.command("StartChat")
        await voice(d, frame(), frame(b"PAUS"))
        await requests(f.chat, 1)
        await voice(d, frame(b"TALK"))  # speaking again, before the speech has ended
        assert await asyncio.to_thread(f.chat.disconnected.wait, 20)
        await voice(d, frame(), frame(b"END!"))
        events = await d.until()
        await d.close()
        return events

    with TraceLines() as trace:
        events = run(main())
        line = trace.get()
    assert [t for t, _ in segments(events)] == ["Answer."]
    assert len(f.chat.requests) == 2 and line["speculative"] == "miss"


def test_start_chat_drops_the_held_answer(serve, tmp_path):
    f = build(serve, tmp_path)
    f.chat.reply(["Held"], forever=" on", delay=0.02)
    f.chat.reply(["Answer."])

    async def main():
        d = await Device.open(f.addr, "restart", stream_asr=True)
        await d.command("StartChat")
        await voice(d, frame(), frame(b"PAUS"))
        await requests(f.chat, 1)
        await d.command("StartChat")  # (the utterance goes on; its held answer does not)
        assert await asyncio.to_thread(f.chat.disconnected.wait, 20)
        await voice(d, frame(b"END!"))
        events = await d.until()
        await d.close()
        return events

    with TraceLines() as trace:
        events = run(main())
        line = trace.get()
    assert [name(e) for e in events][:3] == ["EndVad", "ASR", "StartAudio"]
    assert [t for t, _ in segments(events)] == ["Answer."]
    assert len(f.chat.requests) == 2 and f.chat.completed == 1
    assert line["speculative"] == "miss"


# --------------------------------------------------------------------------------------------
# the connection leaves
# --------------------------------------------------------------------------------------------


def test_connection_leaving_during_a_held_answer_leaks_nothing(serve, tmp_path):
    f = build(serve, tmp_path)
    f.chat.reply(["Held"], forever=" on", delay=0.02)

    async def tasks() -> list[str]:
        me = asyncio.current_task()
        return sorted(t.get_name() for t in asyncio.all_tasks() if t is not me)

    async def gone() -> list[str]:
        assert await f.manager.wait_until(lambda m: not m.sessions, 20)
        return [n for n in await tasks() if n.startswith("echokit-")]

    async def main():
        d = await Device.open(f.addr, "leaver", stream_asr=True)
        await d.command("StartChat")
        await voice(d, frame(), frame(b"PAUS"))
        await requests(f.chat, 1)
        held = await on_server(f, tasks)
        await d.close()
        assert await asyncio.to_thread(f.chat.disconnected.wait, 20)  # the stream was closed
        return held, await on_server(f, gone)

    held, left = run(main())
    assert "echokit-device-speculative" in held
    assert left == []
    assert f.chat.completed == 0


# --------------------------------------------------------------------------------------------
# the conversations: tools wait, the Responses chain is rewound
# --------------------------------------------------------------------------------------------


class WatchedEvent(asyncio.Event):
    """An event that says when someone waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self) -> bool:
        self.waited.set()
        return await super().wait()


class Lamp:
    """A device's tool box with one tool; records its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def tools(self) -> list[Tool]:
        return [Tool("lamp", "Switch the lamp", {"type": "object", "properties": {}})]

    async def call(self, name: str, arguments: str) -> list[str]:
        self.calls.append(name)
        return ["on"]


def test_speculative_tool_call_waits_for_adoption(serve):
    chat = ChatServer()
    chat.addr = serve(chat.app)
    chat.reply(["One moment. ", *tool_call("c1", "lamp", "{}")])
    chat.reply(["The lamp is on."])
    cfg = OpenAIChatLLM.model_validate(
        {"url": f"http://{chat.addr}/v1/chat/completions", "history": 5}
    )

    async def main():
        be = ChatBackend(cfg)
        conv = be.conversation()
        assert isinstance(conv, Rewindable)
        lamp = Lamp()
        conv.use_tools(lamp)
        adopted = WatchedEvent()
        conv.speculate(adopted)
        reply = conv.reply("lamp on")
        assert await reply.__anext__() == "One moment. "
        rest = asyncio.ensure_future(reply.__anext__())
        await adopted.waited.wait()
        before = list(lamp.calls), len(chat.requests)
        adopted.set()
        items = [await rest] + [item async for item in reply]
        await be.aclose()
        return before, lamp.calls, items, conv.history

    before, calls, items, history = run(main())
    assert before == ([], 1)  # nothing ran before the adoption
    assert calls == ["lamp"] and "".join(i for i in items if isinstance(i, str)) == (
        "The lamp is on."
    )
    assert history[-1] == {"role": "assistant", "content": "The lamp is on."}


@pytest.mark.parametrize("complete", [True, False])
def test_responses_chain_is_rewound_after_a_dropped_reply(serve, complete):
    srv = ResponsesServer()
    srv.addr = serve(srv.app)
    cfg = OpenAIResponsesLLM.model_validate({"url": f"http://{srv.addr}/v1/responses"})

    async def main():
        be = ResponsesBackend(cfg)
        conv = be.conversation("dev")
        _ = [item async for item in conv.reply("first")]
        chained = conv.previous_id
        state = conv.speculate(asyncio.Event())
        reply = conv.reply("dropped")
        if complete:
            _ = [item async for item in reply]  # completed: a new id
            assert conv.previous_id != chained
        else:
            await reply.__anext__()
            await reply.aclose()
        conv.rewind(state)
        after = conv.previous_id
        _ = [item async for item in conv.reply("next")]
        await be.aclose()
        return chained, after

    chained, after = run(main())
    assert after == chained
    assert srv.requests[-1].json["previous_response_id"] == chained
    assert srv.requests[-1].json["input"] == "next"


def test_the_status_page_says_which_answer_was_used_and_which_dropped(serve, tmp_path, browser):
    """Each turn's card on the status page tells whether the answer started at the pause was
    used (a hit) or dropped (a miss); a turn without one says neither."""
    f = build(serve, tmp_path)
    f.chat.reply(["Used."])
    f.chat.reply(["Held"], forever=" on", delay=0.02)
    f.chat.reply(["Answer."])
    # (Playwright's sync API holds this thread's event loop: the device talks from another)
    with ThreadPoolExecutor(1) as other:
        other.submit(lambda: run(pause_then_end(f, "hit"))).result()
        other.submit(lambda: run(pause_then_speak_on(f, "miss"))).result()
    page = browser.new_page()
    try:
        page.goto(f"http://{f.addr}/console/status")
        page.wait_for_function("() => window.echokitStatus.turns.length === 2", timeout=20_000)

        def card(device: str) -> str:
            return page.locator("#turns li.turn", has_text=device).inner_text()

        assert "answer started at the pause, used" in card("hit")
        assert "dropped" not in card("hit")
        assert "answer started at the pause, dropped" in card("miss")
    finally:
        page.close()

"""``WS /v1/realtime`` end to end: a real server on loopback with the remote ASR, LLM and TTS
clients talking to the stand-ins of tests/standins.py, driven by the real ``openai`` client
(``client.beta.realtime.connect``) and, for malformed input, by a raw WebSocket.

Voice turns use real speech (tests/data/vad_fixture_hello16k.wav resampled to 24 kHz) followed
by silence, appended in 100 ms events as fast as the server takes them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
import websockets
from harness import api_state
from standins import ASRServer, ChatServer, TTSServer, tone
from websockets.asyncio.client import connect

from echokit_fast.audio import float_to_pcm16, pcm16_to_float, read_wav, resample
from echokit_fast.config import parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"
RATE = 24000
CHUNK = 2 * RATE // 10  # 100 ms of PCM16


def _speech() -> bytes:
    """The fixture (16 kHz) at 24 kHz: ~0.5 s of silence, speech until ~4.4 s, silence."""
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return float_to_pcm16(resample(pcm16_to_float(pcm), 16000, RATE))


SPEECH = _speech()
SILENCE = bytes(2 * RATE * 2)  # 2 s


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def config_text(asr: str, chat: str, tts: str, extra: str = "") -> str:
    return f"""addr = "127.0.0.1:0"
{extra}
[asr]
platform = "openai"
url = "http://{asr}/v1/audio/transcriptions"

[llm]
platform = "openai_chat"
url = "http://{chat}/v1/chat/completions"
history = 5
[[llm.sys_prompts]]
role = "system"
content = "You are a test assistant."

[tts]
platform = "openai"
url = "http://{tts}/v1/audio/speech"
api_key = "unused"
voice = "nova"
"""


def start(serve, extra: str = "") -> SimpleNamespace:
    """Stand-ins and the server on their config (``extra``: more top-level TOML)."""
    asr, chat, tts = ASRServer(), ChatServer(), TTSServer(rate=RATE)
    addrs = [serve(s.app) for s in (asr, chat, tts)]
    config = parse_config(config_text(*addrs, extra=extra), log_issues=False).config
    state = AppState(config, probe_llm=False)
    addr = serve(create_app(state=state))
    return SimpleNamespace(addr=addr, asr=asr, chat=chat, tts=tts, state=state)


@pytest.fixture
def stack(serve) -> SimpleNamespace:
    return start(serve)


def client(addr: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://{addr}/v1", websocket_base_url=f"ws://{addr}/v1", api_key="unused"
    )


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")


async def until(conn: Any, last: str, timeout: float = 30) -> list[Any]:
    """Events (the openai client's models) up to and including the first of type ``last``."""
    events = []
    while True:
        events.append(await asyncio.wait_for(conn.recv(), timeout))
        if events[-1].type == last:
            return events


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def of(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


async def append(conn: Any, pcm: bytes) -> None:
    for i in range(0, len(pcm), CHUNK):
        await conn.input_audio_buffer.append(audio=b64(pcm[i : i + CHUNK]))


def audio_of(events: list[Any]) -> bytes:
    return b"".join(base64.b64decode(e.delta) for e in of(events, "response.audio.delta"))


def tts_audio(tts: TTSServer, texts: list[str]) -> bytes:
    """What the TTS stand-in says for ``texts``, as 24 kHz PCM16."""
    return b"".join(float_to_pcm16(tone(tts.duration(t), RATE)) for t in texts)


async def say(conn: Any, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await conn.conversation.item.create(item=item)


# --- connecting and the session -------------------------------------------------------------


def test_session_created_then_conversation_created(stack) -> None:
    async def go() -> list[Any]:
        async with client(stack.addr).beta.realtime.connect(model="gpt-4o-realtime") as conn:
            return [await conn.recv(), await conn.recv()]

    created, conversation = run(go())
    assert created.type == "session.created"
    s = created.session
    assert s.model == "gpt-4o-realtime-preview" and s.voice == "nova"
    assert s.instructions == "You are a test assistant."  # the first system prompt
    assert (s.input_audio_format, s.output_audio_format) == ("pcm16", "pcm16")
    assert s.temperature == 0.8 and s.modalities == ["text", "audio"]
    td = s.turn_detection
    assert (td.type, td.prefix_padding_ms, td.silence_duration_ms) == ("server_vad", 300, 500)
    assert td.create_response is True
    assert conversation.type == "conversation.created"
    assert conversation.conversation.object == "realtime.conversation"


def test_session_update_merges_or_refuses_with_an_error(stack) -> None:
    async def go() -> list[Any]:
        async with client(stack.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            out = []
            await conn.session.update(
                session={
                    "modalities": ["text"],
                    "instructions": "Be brief.",
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
                }
            )
            out.append(await conn.recv())
            await conn.session.update(session={"input_audio_format": "g711_ulaw"})
            out.append(await conn.recv())
            await conn.session.update(session={"turn_detection": {"type": "semantic_vad"}})
            out.append(await conn.recv())
            await conn.session.update(session={"turn_detection": None})
            out.append(await conn.recv())
            return out

    merged, bad_format, semantic, off = run(go())
    assert merged.type == "session.updated"
    assert merged.session.modalities == ["text"] and merged.session.instructions == "Be brief."
    assert merged.session.turn_detection.silence_duration_ms == 700
    assert merged.session.turn_detection.prefix_padding_ms == 300  # the default, kept
    assert bad_format.type == "error"
    assert (bad_format.error.code, bad_format.error.param) == (
        "unsupported_audio_format",
        "input_audio_format",
    )
    assert semantic.type == "error" and semantic.error.code == "unsupported_turn_detection"
    # the refused updates changed nothing; the last one turned the server VAD off
    assert off.type == "session.updated" and off.session.turn_detection is None
    assert off.session.input_audio_format == "pcm16" and off.session.modalities == ["text"]


# --- text turns -----------------------------------------------------------------------------


def test_text_turn_streams_text_and_the_tts_audio_at_24k(stack) -> None:
    stack.chat.reply(["Hello there. ", "How are you?"])
    stack.chat.reply(["Just text."])

    async def go() -> tuple[list[Any], list[Any]]:
        async with client(stack.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            await say(conn, "Hi")
            await conn.response.create()
            first = await until(conn, "response.done")
            await say(conn, "And now?")
            await conn.response.create(response={"modalities": ["text"]})
            return first, await until(conn, "response.done")

    first, second = run(go())
    names = types(first)
    assert names[:5] == [
        "conversation.item.created",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.content_part.added",
    ]
    assert names[-6:] == [
        "response.text.done",
        "response.content_part.done",
        "response.audio.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert first[0].item.content[0].text == "Hi"
    deltas = of(first, "response.text.delta")
    assert "".join(d.delta for d in deltas) == "Hello there. How are you?"
    assert of(first, "response.text.done")[0].text == "Hello there. How are you?"
    # one TTS request per segment; the audio deltas are exactly its audio, in order
    spoken = ["Hello there.", "How are you?"]
    assert sorted(r.json["input"] for r in stack.tts.requests) == spoken  # synthesised at once
    assert audio_of(first) == tts_audio(stack.tts, spoken)
    deltas = of(first, "response.audio.delta")
    assert {(d.content_index, d.item_id) for d in deltas} == {(1, first[2].item.id)}
    done = first[-1].response
    assert done.status == "completed"
    assert [p.type for p in done.output[0].content] == ["text", "audio"]
    # the LLM got the system prompt and the user's text
    messages = stack.chat.requests[0].json["messages"]
    assert messages[0] == {"role": "system", "content": "You are a test assistant."}
    assert messages[-1] == {"role": "user", "content": "Hi"}
    # a text-only response: no audio part, no audio, no TTS request; the history goes on
    assert not of(second, "response.audio.delta") and len(stack.tts.requests) == 2
    assert [e.part.type for e in of(second, "response.content_part.added")] == ["text"]
    assert of(second, "response.text.done")[0].text == "Just text."
    history = stack.chat.requests[1].json["messages"]
    assert history[-3:] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there. How are you?"},
        {"role": "user", "content": "And now?"},
    ]


# --- audio turns ----------------------------------------------------------------------------


def test_voice_turn_with_server_vad(stack) -> None:
    stack.asr.answer("What time is it?")
    stack.chat.reply(["It is noon."])

    async def go() -> list[Any]:
        async with client(stack.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            await append(conn, SPEECH + SILENCE)
            return await until(conn, "response.done")

    events = run(go())
    names = types(events)
    assert names[:6] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    started, stopped, committed, item, transcribed = events[:5]
    item_id = started.item_id
    assert stopped.item_id == committed.item_id == item.item.id == transcribed.item_id == item_id
    # the fixture's speech runs from ~0.54 s to ~4.38 s: the commit starts prefix_padding_ms
    # (300) before it and ends silence_duration_ms (500) after it
    assert 240 - 100 <= started.audio_start_ms <= 240 + 100
    assert 4880 - 150 <= stopped.audio_end_ms <= 4880 + 150
    assert transcribed.transcript == "What time is it?"
    assert item.item.content[0].transcript == "What time is it?"
    # the transcriber got exactly the committed audio, at 16 kHz
    pcm, rate = read_wav(stack.asr.requests[0].part("file"))
    committed_ms = stopped.audio_end_ms - started.audio_start_ms
    assert rate == 16000 and abs(len(pcm) - committed_ms * 16) <= 32
    assert stack.chat.requests[0].json["messages"][-1] == {
        "role": "user",
        "content": "What time is it?",
    }
    assert audio_of(events) == tts_audio(stack.tts, ["It is noon."])
    assert events[-1].response.status == "completed"


def test_manual_commit_and_clear_without_turn_detection(stack) -> None:
    stack.asr.answer("Manual turn.")
    speech = SPEECH[: 2 * RATE * 3]  # 3 s

    async def go() -> tuple[list[Any], list[Any]]:
        async with client(stack.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            await conn.session.update(session={"turn_detection": None})
            await until(conn, "session.updated")
            await append(conn, SILENCE)
            await conn.input_audio_buffer.clear()
            cleared = await until(conn, "input_audio_buffer.cleared")
            await conn.input_audio_buffer.commit()  # nothing left to commit
            cleared.append(await conn.recv())
            await append(conn, speech)
            await conn.input_audio_buffer.commit()
            return cleared, await until(conn, "response.done")

    cleared, events = run(go())
    assert types(cleared) == ["input_audio_buffer.cleared", "error"]
    assert cleared[1].error.code == "input_audio_buffer_commit_empty"
    names = types(events)
    assert "input_audio_buffer.speech_started" not in names  # no server VAD
    assert names[:4] == [
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    assert events[2].transcript == "Manual turn."
    # the transcriber got exactly the audio appended after the clear
    pcm, rate = read_wav(stack.asr.requests[0].part("file"))
    assert rate == 16000 and len(pcm) == 3 * 16000
    assert events[-1].response.status == "completed"


# --- cancel, busy, failures -----------------------------------------------------------------


def test_response_in_progress_and_cancel(stack) -> None:
    stack.chat.fail(hang=True)  # the first answer never comes
    stack.chat.reply(["Back again."])

    async def go() -> tuple[list[Any], list[Any], list[Any]]:
        async with client(stack.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            await say(conn, "Wait for it")
            await conn.response.create()
            await until(conn, "response.created")
            assert await asyncio.to_thread(stack.chat.received.wait, 10)
            await conn.response.create()
            busy = await until(conn, "error")
            await conn.response.cancel()
            cancelled = await until(conn, "conversation.interrupted")
            await say(conn, "Again")
            await conn.response.create()
            return busy, cancelled, await until(conn, "response.done")

    busy, cancelled, after = run(go())
    assert types(busy) == [
        "response.output_item.added",
        *["response.content_part.added"] * 2,
        "error",
    ]
    assert busy[-1].error.code == "response_in_progress"
    assert types(cancelled)[-2:] == ["response.done", "conversation.interrupted"]
    done = cancelled[-2].response
    assert done.status == "cancelled" and done.status_details.reason == "client_cancelled"
    assert stack.chat.disconnected.wait(10)  # the LLM request was dropped
    assert after[-1].response.status == "completed"
    assert of(after, "response.text.done")[0].text == "Back again."


def test_backend_failures_are_error_events_and_the_connection_goes_on(stack) -> None:
    stack.chat.fail(500)
    stack.chat.reply(["Recovered."])
    stack.asr.fail(400)

    async def go() -> tuple[list[Any], list[Any], list[Any]]:
        async with client(stack.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            await say(conn, "Hello?")
            await conn.response.create()
            llm = await until(conn, "response.done")
            await say(conn, "Hello again?")
            await conn.response.create()
            ok = await until(conn, "response.done")
            await conn.session.update(session={"turn_detection": None})
            await until(conn, "session.updated")
            await append(conn, SPEECH[:CHUNK])
            await conn.input_audio_buffer.commit()
            asr = await until(conn, "error")
            return llm, ok, asr

    llm, ok, asr = run(go())
    errors = of(llm, "error")
    assert [(e.error.type, e.error.code) for e in errors] == [("server_error", "llm_failed")]
    assert errors[0].error.message  # the backend's notice
    assert llm[-1].response.status == "failed"
    assert llm[-1].response.status_details.error.code == "llm_failed"
    assert ok[-1].response.status == "completed"
    assert of(ok, "response.text.done")[0].text == "Recovered."
    assert types(asr) == [
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.failed",
        "error",
    ]
    assert asr[-1].error.code == "asr_failed"


def test_tts_failure_fails_the_response(stack) -> None:
    stack.chat.reply(["Only one part."])  # one segment, one TTS request: it fails
    stack.tts.fail(401)

    async def go() -> list[Any]:
        async with client(stack.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            await say(conn, "Speak")
            await conn.response.create()
            return await until(conn, "response.done")

    events = run(go())
    assert [e.error.code for e in of(events, "error")] == ["tts_failed"]
    assert events[-1].response.status == "failed"
    assert not of(events, "response.audio.delta")


# --- bad input and limits -------------------------------------------------------------------


def test_malformed_events_get_error_events_and_the_connection_stays(serve) -> None:
    s = start(serve, extra="[limits]\nmax_realtime_event_bytes = 16384\nmax_audio_s = 0.5\n")

    def append_event(audio: str) -> str:
        return json.dumps({"type": "input_audio_buffer.append", "audio": audio})

    threshold = {"type": "session.update", "session": {"turn_detection": {"threshold": 2}}}
    bad: list[str | bytes] = [
        "{not json",
        "[1, 2]",
        json.dumps({"type": "no.such.event"}),
        json.dumps({"type": "conversation.item.delete", "item_id": "x"}),
        json.dumps({"type": "input_audio_buffer.append"}),
        append_event("%%%"),
        append_event(b64(b"\x01\x02\x03")),
        json.dumps(threshold),
        b"\x00\x01",
        append_event("A" * 20000),  # over max_realtime_event_bytes
        append_event(b64(bytes(2400))),  # 0.05 s: taken
        *[append_event(b64(bytes(4800)))] * 5,  # 0.1 s each: the fifth is over max_audio_s
    ]

    async def go() -> list[dict[str, Any]]:
        async with connect(f"ws://{s.addr}/v1/realtime") as ws:
            for _ in range(2):
                await ws.recv()  # session.created, conversation.created
            off = {"type": "session.update", "session": {"turn_detection": None}}
            await ws.send(json.dumps(off))  # all audio stays in the buffer
            assert json.loads(await ws.recv())["type"] == "session.updated"
            for frame in bad:
                await ws.send(frame)
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            answers = []
            while True:
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                if answers[-1]["type"] == "input_audio_buffer.cleared":
                    return answers[:-1]

    errors = run(go())
    assert {a["type"] for a in errors} == {"error"}
    assert [(a["error"]["code"], a["error"]["param"]) for a in errors] == [
        ("invalid_json", None),
        ("invalid_event", None),
        ("invalid_value", "type"),
        ("unsupported_event", "type"),
        ("invalid_value", "audio"),
        ("invalid_value", "audio"),
        ("invalid_value", "audio"),
        ("invalid_value", "session.turn_detection.threshold"),
        ("invalid_event", None),
        ("event_too_large", None),
        ("input_audio_buffer_full", None),
    ]
    assert all(a["error"]["type"] == "invalid_request_error" for a in errors)
    assert all(a["error"]["message"] for a in errors)


def test_other_layouts_refuse_the_upgrade(serve) -> None:
    addr = serve(create_app(state=api_state()))

    async def go() -> None:
        async with connect(f"ws://{addr}/v1/realtime"):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        run(go())
    assert info.value.response.status_code == 404
    assert b"pipeline layout" in info.value.response.body


def test_silence_before_speech_is_not_kept_beyond_the_padding(serve) -> None:
    """Between utterances the buffer keeps only ``prefix_padding_ms`` of what the VAD has
    seen: 30 s of silence fit a 10 s buffer (the VAD lags at most ~8 s behind), and the
    commit after it is the same as after no silence at all (to a VAD window)."""
    s = start(serve, extra="[limits]\nmax_audio_s = 10\n")
    s.chat.reply(["One."])
    s.chat.reply(["Two."])
    lead = bytes(2 * RATE * 30)

    async def go() -> list[list[Any]]:
        async with client(s.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            out = []
            for before in (b"", lead):
                await append(conn, before + SPEECH + SILENCE)
                out.append(await until(conn, "response.done"))
            return out

    first, second = run(go())
    assert not of(first + second, "error")
    lengths = [len(read_wav(r.part("file"))[0]) for r in s.asr.requests]
    assert len(lengths) == 2 and abs(lengths[0] - lengths[1]) <= 512
    start1 = of(first, "input_audio_buffer.speech_started")[0].audio_start_ms
    start2 = of(second, "input_audio_buffer.speech_started")[0].audio_start_ms
    # the timeline counts every sample: the first turn's audio, then the 30 s
    before2 = (len(SPEECH) + len(SILENCE) + len(lead)) // 2 * 1000 // RATE
    assert abs(start2 - before2 - start1) <= 64


def test_speech_interrupts_the_running_response(stack) -> None:
    stack.chat.fail(hang=True)

    async def go() -> list[Any]:
        async with client(stack.addr).beta.realtime.connect(model="m") as conn:
            await until(conn, "conversation.created")
            await say(conn, "Talk for a long time")
            await conn.response.create()
            await until(conn, "response.created")
            assert await asyncio.to_thread(stack.chat.received.wait, 10)
            await append(conn, SPEECH)
            return await until(conn, "response.done")

    events = run(go())
    assert types(events)[0] == "response.output_item.added"
    assert "input_audio_buffer.speech_started" in types(events)
    done = events[-1].response
    assert done.status == "cancelled" and done.status_details.reason == "turn_detected"
    assert stack.chat.disconnected.wait(10)

"""Faulty backends over real sockets: the server on loopback with the stand-in ASR, LLM and TTS
servers speaking their real wire formats, a device client over a real WebSocket.

Each fault (a trickle, empty deltas or keep-alives, an endless stream, a huge body, a wrong JSON
type, an empty 200, plain JSON to ``stream: true``, a stream cut after its first sentence, a
voice that cannot say the text) ends the turn with its notice -- shown, then spoken unless the
TTS is what failed -- within its short ``[limits]`` deadline, then ``EndResponse``; the same
connection is answered normally next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from device_fakes import Device, name
from standins import ASRServer, ChatServer, Fail, ResponsesServer, TTSServer
from test_config import PIPELINE
from test_device import SILENCE, SPEECH, decode_segment, segments

from echokit_fast.backends import http
from echokit_fast.backends.asr.openai import OpenAIASR, RemoteTranscriber
from echokit_fast.backends.base import BackendError
from echokit_fast.backends.llm.openai_responses import OpenAIResponsesLLM, ResponsesBackend
from echokit_fast.backends.tts.openai import OpenAISpeaker, OpenAITTS
from echokit_fast.config import ConfigError, parse_config
from echokit_fast.conversation.pipeline import ANSWER_TOO_LONG, NO_ANSWER, NO_AUDIO
from echokit_fast.conversation.session import TURN_TOO_LONG
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

#: seconds a notice may come after its deadline on a loaded machine
MARGIN = 10.0
#: seconds a whole turn may take here (a fault that is not handled hangs until then)
LIMIT = 30.0
#: a flood's pace: 64 KiB every 10 ms, so a client that reads it all (main's) stays bounded
FLOOD = {"flood": bytes(65536), "every": 0.01}

CONFIG = """\
addr = "127.0.0.1:0"
[asr]
platform = "openai"
url = "http://{asr}/v1/audio/transcriptions"
[llm]
platform = "openai_chat"
url = "http://{chat}/v1/chat/completions"
history = 5
[tts]
{tts}
[limits]
{limits}
"""
STREAM_GSV = 'platform = "stream_gsv"\nurl = "http://{}/v1/audio/stream_speech"\nspeaker = "a"'


@dataclass
class Stack:
    """The stand-ins, and :meth:`start` for a server on them."""

    asr: ASRServer
    chat: ChatServer
    tts: TTSServer
    serve: Callable[[Any], str]
    tmp_path: Path

    def start(self, limits: dict[str, float], *, local_tts: bool = False) -> str:
        tts = 'platform = "local"' if local_tts else STREAM_GSV.format(self.tts.addr)
        text = CONFIG.format(
            asr=self.asr.addr,
            chat=self.chat.addr,
            tts=tts,
            limits="\n".join(f"{k} = {v}" for k, v in limits.items()),
        )
        ctx = AppState(parse_config(text, filename="config.toml", env={}).config)
        ctx.record_dir = self.tmp_path / "record"
        return self.serve(create_app(state=ctx))


@pytest.fixture
def stack(serve, tmp_path) -> Stack:
    asr, chat, tts = ASRServer(), ChatServer(), TTSServer()
    for server in (asr, chat, tts):
        server.addr = serve(server.app)
    return Stack(asr, chat, tts, serve, tmp_path)


@dataclass
class Turn:
    events: list[Any]
    #: seconds from the start of the turn (the Text sent, or EndVad received) to the notice
    notice_after: float | None
    #: the next turn on the same connection
    again: list[Any]


async def talk(addr: str, *, voice: bool) -> Turn:
    """One turn (speech through the server's VAD, or a ``Text``), then a ``Text`` turn."""
    loop = asyncio.get_running_loop()
    d = await Device.open(addr, "dev", opus=True, stream_asr=True)
    events: list[Any] = []
    start = notice = None

    async def first() -> None:
        nonlocal start, notice
        if voice:
            await d.command("StartChat")
            await d.audio(SPEECH + SILENCE)
        else:
            start = loop.time()
            await d.command("Text", input="Tell me.")
        while not events or name(events[-1]) != "EndResponse":
            events.append(await d.recv(timeout=LIMIT))
            if name(events[-1]) == "EndVad":
                start = loop.time()
            elif name(events[-1]) == "DisplayText":
                notice = loop.time()

    try:
        await asyncio.wait_for(first(), LIMIT)
        await d.command("Text", input="again")
        again = await asyncio.wait_for(d.until(), LIMIT)
    finally:
        await d.close()
    after = None if notice is None or start is None else notice - start
    return Turn(events, after, again)


@dataclass
class Case:
    limits: dict[str, float]
    setup: Callable[[Stack], None]
    notice: str
    #: the segments spoken before the notice (None: not checked)
    before: list[str] | None = field(default_factory=list)
    spoken: bool = True
    voice: bool = False
    #: the notice is due this many seconds after the turn started
    deadline: float = 0.0


def _default(server: Any, item: Any) -> Callable[[Stack], None]:
    return lambda st: setattr(getattr(st, server), "default", item)


CASES = {
    "asr-trickle": Case(
        {"asr_timeout_s": 1},
        _default("asr", Fail(flood=b" ", every=0.5)),
        http.ASR.timeout,
        voice=True,
        deadline=1,
    ),
    "asr-huge-body": Case(
        {"max_json_bytes": 65536},
        _default("asr", Fail(body=b'{"text": "', **FLOOD)),
        http.ASR.too_large,
        voice=True,
    ),
    "asr-text-not-a-string": Case(
        {}, _default("asr", {"text": 5}), http.ASR.bad_answer, voice=True
    ),
    "llm-keepalives-no-first-token": Case(
        {"llm_first_token_s": 1},
        lambda st: st.chat.reply([], forever="", delay=0.1),
        http.LLM.timeout,
        deadline=1,
    ),
    "llm-empty-deltas-after-a-sentence": Case(
        {"llm_stall_s": 1},
        lambda st: st.chat.reply(["It is sunny in Paris."], forever="", delay=0.1),
        http.LLM.timeout,
        before=["It is sunny in Paris."],
        deadline=1,
    ),
    "llm-endless-answer-over-max-chars": Case(
        {"max_answer_chars": 120},
        lambda st: st.chat.reply([], forever="Blah blah. ", delay=0.02),
        ANSWER_TOO_LONG,
        before=None,
    ),
    "llm-endless-answer-over-its-deadline": Case(
        {"llm_answer_s": 1.5},
        lambda st: st.chat.reply([], forever="Blah. ", delay=0.2),
        http.LLM.timeout,
        before=None,
        deadline=1.5,
    ),
    "turn-over-its-deadline": Case(
        {"turn_s": 2},
        lambda st: st.chat.reply([], forever="Blah. ", delay=0.2),
        TURN_TOO_LONG,
        before=None,
        deadline=2,
    ),
    "llm-cut-after-the-first-sentence": Case(
        {},
        lambda st: st.chat.reply(["It is sunny in Paris.", " Take your"], cut_after=1),
        http.LLM.cut or "",
        before=["It is sunny in Paris."],
    ),
    "tts-trickle": Case(
        {"tts_segment_s": 1},
        lambda st: st.tts.fail(flood=b"\0", every=0.3),
        http.TTS.timeout,
        before=["OK."],
        spoken=False,
        deadline=1,
    ),
    "tts-endless-stream": Case(
        {"max_tts_bytes": 1 << 20},
        lambda st: st.tts.fail(**FLOOD),
        http.TTS.too_large,
        before=["OK."],
        spoken=False,
    ),
    "tts-empty-200": Case({}, lambda st: st.tts.fail(200, body=b""), NO_AUDIO, before=["OK."]),
    "llm-empty-answer": Case({}, lambda st: st.chat.reply([""]), NO_ANSWER, before=[]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_fault_ends_the_turn_with_its_notice_in_time(stack: Stack, case: Case) -> None:
    case.setup(stack)
    addr = stack.start(case.limits)
    turn = asyncio.run(talk(addr, voice=case.voice))
    check_notice(turn, case.notice, before=case.before, spoken=case.spoken)
    assert turn.notice_after is not None and turn.notice_after < case.deadline + MARGIN
    assert stack.asr.sent < 16 << 20 and stack.tts.sent < 16 << 20  # read up to the caps only
    if case.before is None:  # an endless answer: the LLM stream was closed
        assert stack.chat.disconnected.wait(LIMIT)


def check_notice(turn: Turn, notice: str, *, before: list[str] | None, spoken: bool) -> None:
    events = turn.events
    names = [name(e) for e in events]
    assert "DisplayText" in names, f"no notice: {names}"
    assert names.count("EndResponse") == 1 and names[-1] == "EndResponse"
    i = names.index("DisplayText")
    assert events[i] == {"DisplayText": {"text": notice}}
    segs = segments(events[i + 1 : -1])
    assert [t for t, _ in segs] == [notice]
    assert (len(decode_segment(segs[0][1])) > 0) == spoken
    said = [t for t, _ in segments(events[:i])]
    if before is not None:
        assert said == before
    if notice == ANSWER_TOO_LONG:  # what fits within max_answer_chars is said, no more
        assert 60 < len(" ".join(said)) <= 120
    assert [t for t, _ in segments(turn.again)] == ["OK."]  # the server goes on


@pytest.mark.parametrize("text", ["你好。", "😀"])
def test_the_embedded_tts_without_audio_for_the_text_is_a_spoken_notice(
    stack: Stack, text: str
) -> None:
    stack.chat.reply(text)
    addr = stack.start({}, local_tts=True)
    turn = asyncio.run(talk(addr, voice=False))
    check_notice(turn, NO_AUDIO, before=[text], spoken=True)


def test_an_llm_answering_stream_true_with_plain_json_is_spoken(stack: Stack) -> None:
    answer = "It is sunny in Paris. Take your sunglasses and enjoy the walk!"
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
    }
    stack.chat.fail(200, body=completion)
    addr = stack.start({})
    turn = asyncio.run(talk(addr, voice=False))
    names = [name(e) for e in turn.events]
    assert "DisplayText" not in names and names[-1] == "EndResponse"
    said = segments(turn.events)
    assert [t for t, _ in said] == [
        "It is sunny in Paris.",
        "Take your sunglasses and enjoy the walk!",
    ]
    assert all(len(decode_segment(audio)) for _, audio in said)
    # the answer is the history's: the next request carries it
    assert stack.chat.requests[-1].json["messages"][-2] == {"role": "assistant", "content": answer}


# --- the clients on their own -------------------------------------------------------------------


def test_the_asr_attempt_deadline_covers_the_body(serve) -> None:
    asr = ASRServer()
    asr.default = Fail(flood=b" ", every=0.1)  # never a 0.3 s gap: only a total deadline ends it
    url = f"http://{serve(asr.app)}/v1/audio/transcriptions"

    async def go() -> BackendError:
        tr = RemoteTranscriber(OpenAIASR.model_validate({"url": url}), attempt_timeout=0.3)
        try:
            with pytest.raises(BackendError) as ei:
                await asyncio.wait_for(tr.transcribe(np.zeros(8000, np.float32)), LIMIT)
        finally:
            await tr.aclose()
        return ei.value

    err = asyncio.run(go())
    assert err.notice == http.ASR.timeout and len(asr.requests) == 3


def test_a_huge_tts_wav_is_refused_past_the_cap(serve) -> None:
    tts = TTSServer()
    tts.fail(body=b"RIFF", **FLOOD)
    cfg = OpenAITTS.model_validate(
        {"url": f"http://{serve(tts.app)}/v1/audio/speech", "api_key": "k"}
    )

    async def go() -> BackendError:
        speaker = OpenAISpeaker(cfg, max_bytes=1 << 20)
        try:
            with pytest.raises(BackendError) as ei:
                await asyncio.wait_for(speaker.speak("hi").__anext__(), LIMIT)
        finally:
            await speaker.aclose()
        return ei.value

    assert asyncio.run(go()).notice == http.TTS.too_large
    assert tts.sent < 16 << 20


def test_a_responses_llm_answering_plain_json_is_read(serve) -> None:
    srv = ResponsesServer()
    text = "It is sunny."
    srv.fail(
        200,
        body={
            "id": "resp_9",
            "object": "response",
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text}],
                }
            ],
        },
    )
    cfg = OpenAIResponsesLLM.model_validate({"url": f"http://{serve(srv.app)}/v1/responses"})

    async def go() -> tuple[list[Any], str | None]:
        be = ResponsesBackend(cfg)
        conv = be.conversation()
        try:
            return [d async for d in conv.reply("weather?")], conv.previous_id
        finally:
            await be.aclose()

    assert asyncio.run(go()) == ([text], "resp_9")


# --- the keys -----------------------------------------------------------------------------------

KEYS = {
    "max_json_bytes": 1 << 20,
    "max_tts_bytes": 64 << 20,
    "asr_timeout_s": 30.0,
    "llm_first_token_s": 60.0,
    "llm_stall_s": 30.0,
    "llm_answer_s": 120.0,
    "max_answer_chars": 16384,
    "tts_segment_s": 60.0,
    "turn_s": 300.0,
}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", ["0", "-1", '"9"'])
def test_the_limits_are_validated_at_load(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(PIPELINE + f"[limits]\n{key} = {value}\n", filename="config.toml", env={})
    assert f"limits.{key}" in str(err.value)


def test_the_limits_defaults_and_values() -> None:
    limits = parse_config(PIPELINE, filename="config.toml", env={}).config.limits
    assert {k: getattr(limits, k) for k in KEYS} == KEYS
    text = "".join(f"{k} = 7\n" for k in KEYS)
    limits = parse_config(PIPELINE + "[limits]\n" + text, filename="config.toml", env={}).config
    assert all(getattr(limits.limits, k) == 7 for k in KEYS)

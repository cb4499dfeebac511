"""The ``[limits]`` caps on device input over real loopback sockets: an over-long ``Text`` is
refused with the spoken notice and never reaches the LLM, a transcript is cut to the cap, the
LLM history stays under ``max_history_bytes`` (checked on what the LLM stand-in receives), and
``max_sessions`` evicts the oldest detached session or refuses the connection. And on what is
sent: a huge answer is spoken in bounded segments, an interim transcript is capped like a final
one, and no event's text is longer than ``max_text_bytes``."""

from __future__ import annotations

import json

import pytest
import websockets
from device_fakes import Device, FakeSpeaker, FakeTranscriber, SentenceSegmenter, name
from standins import ChatServer
from test_config import PIPELINE
from test_device import PREROLL, SILENCE, SPEECH, _fixture, build, on_server, run, segments

from echokit_fast.backends import registry
from echokit_fast.backends.base import Backends
from echokit_fast.backends.llm.openai_chat import OpenAIChatLLM
from echokit_fast.config import ConfigError, parse_config
from echokit_fast.conversation.session import TEXT_TOO_LONG, Settings
from echokit_fast.conversation.splitter import MAX_SEGMENT_BYTES, cut_text
from echokit_fast.devices.echokit import output
from echokit_fast.devices.echokit.protocol import decode_event
from echokit_fast.devices.socket import SESSIONS_FULL_REASON


def test_text_over_the_cap_is_refused_with_the_notice_and_not_sent(serve, tmp_path):
    app, f = build(tmp_path, settings=Settings(max_text_bytes=64))
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "big", opus=True)
        await d.command("Text", input="é" * 33)  # 66 bytes of UTF-8 (33 characters)
        over = await d.until()
        await d.ws.send(json.dumps({"event": "Text", "input": "x" * (15 * 2**20)}))
        huge = await d.until()
        await d.command("Text", input="a" * 64)  # at the cap: taken
        ok = await d.until()
        await d.close()
        return over, huge, ok

    over, huge, ok = run(main())
    for events in (over, huge):
        assert events[0] == {"DisplayText": {"text": TEXT_TOO_LONG}}
        assert [t for t, _ in segments(events)] == [TEXT_TOO_LONG]
        assert "ASR" not in [name(e) for e in events]
        assert [name(e) for e in events].count("EndResponse") == 1
    assert ok[0] == {"ASR": {"text": "a" * 64}}
    conv = f.convs.of("big")
    assert conv.replies == 1  # only the text within the cap reached the LLM
    assert [m["content"] for m in conv.history if m["role"] == "user"] == ["a" * 64]


def test_transcript_over_the_cap_is_cut_at_a_word_boundary(serve, tmp_path):
    said = "the quick brown fox jumps over the lazy dog " * 4
    transcriber = FakeTranscriber(text=said)
    app, f = build(tmp_path, transcriber=transcriber, settings=Settings(max_text_bytes=30))
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "asr", opus=True)
        await d.command("StartChat")
        await d.audio(SPEECH + SILENCE)
        await d.command("Submit")
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    cut = "the quick brown fox jumps over"
    assert cut_text(said, 30) == cut
    assert {"ASR": {"text": cut}} in events
    assert f.convs.of("asr").history[0] == {"role": "user", "content": cut}


@pytest.mark.parametrize(
    ("text", "cap", "expected"),
    [
        ("hello world foo", 11, "hello world"),
        ("hello world foo", 13, "hello world"),
        ("helloworld", 5, "hello"),  # one word: cut inside it
        ("héllo wörld", 9, "héllo"),  # never inside a UTF-8 sequence
        ("short", 10, "short"),
    ],
)
def test_cut_text(text, cap, expected):
    assert cut_text(text, cap) == expected
    assert len(cut_text(text, cap).encode()) <= cap


def test_history_stays_under_the_byte_cap_over_many_turns(serve, tmp_path):
    chat = ChatServer()
    chat_addr = serve(chat.app)
    cfg = OpenAIChatLLM.model_validate(
        {
            "url": f"http://{chat_addr}/v1/chat/completions",
            "history": 1000,  # the turn count alone would keep everything
            "sys_prompts": [{"role": "system", "content": "S" * 3000}],
        }
    )
    cap = 2000
    factory = registry.get("llm", "openai_chat").build(cfg, registry.Needs(max_history_bytes=cap))
    app, f = build(tmp_path)
    f.ctx.backends = Backends(f.transcriber, f.speaker, factory)
    addr = serve(app)
    chat.default.deltas = ["A" * 300 + "."]

    async def main():
        d = await Device.open(addr, "hist", opus=True, reconnect=True)
        for i in range(20):
            await d.command("Text", input=f"{i:02d}" + "u" * 298)
            events = await d.until()
            assert name(events[-1]) == "EndResponse"
        await d.close()

    run(main())
    assert len(chat.requests) == 20
    for i, req in enumerate(chat.requests):
        messages = req.json["messages"]
        assert messages[0] == {"role": "system", "content": "S" * 3000}  # always kept
        history = messages[1:]
        assert history[-1] == {"role": "user", "content": f"{i:02d}" + "u" * 298}
        assert sum(len(m["content"].encode()) for m in history) <= cap
    # the oldest turns went first: the last request starts with a recent turn
    last = chat.requests[-1].json["messages"][1:]
    assert len(last) >= 5 and last[0]["content"] != "00" + "u" * 298


def test_session_cap_evicts_the_oldest_detached_then_refuses(serve, tmp_path):
    app, f = build(tmp_path, settings=Settings(max_sessions=2))
    addr = serve(app)

    async def detached(device_id: str) -> None:
        async def wait():
            s = f.manager.sessions
            return await f.manager.wait_until(
                lambda m: device_id in s and s[device_id].detached_at is not None, 20
            )

        assert await on_server(f, wait)

    async def talk(device_id: str) -> Device:
        d = await Device.open(addr, device_id, opus=True)
        await d.command("Text", input="hi")
        await d.until()
        return d

    async def main():
        old = await talk("old")
        await old.close()
        await detached("old")
        newer = await talk("newer")
        await newer.close()
        await detached("newer")
        held = await talk("held")  # evicts "old", the session detached longest ago
        after_first = sorted(f.manager.sessions)
        third = await talk("third")  # evicts "newer"
        after_second = sorted(f.manager.sessions)
        refused = await Device.open(addr, "refused", opus=True)  # both have a connection
        with pytest.raises(websockets.ConnectionClosed) as info:
            await refused.recv(timeout=20)
        still = sorted(f.manager.sessions)
        await held.close()
        await third.close()
        return after_first, after_second, info.value, still

    after_first, after_second, closed, still = run(main())
    assert after_first == ["held", "newer"]
    assert after_second == ["held", "third"]
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1013 and closed.rcvd.reason == SESSIONS_FULL_REASON
    assert still == ["held", "third"]


@pytest.mark.parametrize("key", ["max_text_bytes", "max_history_bytes", "max_sessions"])
@pytest.mark.parametrize(("value", "message"), [("0", "must be >= 1, got 0"), ('"9"', "")])
def test_limits_keys_are_validated_at_load(key, value, message):
    with pytest.raises(ConfigError) as err:
        parse_config(PIPELINE + f"[limits]\n{key} = {value}\n", filename="config.toml", env={})
    assert f"limits.{key}" in str(err.value) and message in str(err.value)


def test_limits_defaults_and_values():
    cfg = parse_config(PIPELINE, filename="config.toml", env={}).config
    assert (cfg.limits.max_text_bytes, cfg.limits.max_history_bytes) == (4096, 65536)
    assert cfg.limits.max_sessions == 1000
    text = "[limits]\nmax_text_bytes = 100\nmax_history_bytes = 200\nmax_sessions = 3\n"
    cfg = parse_config(PIPELINE + text, filename="config.toml", env={}).config
    assert (cfg.limits.max_text_bytes, cfg.limits.max_history_bytes) == (100, 200)
    assert cfg.limits.max_sessions == 3


@pytest.mark.parametrize("segmenter", [None, SentenceSegmenter], ids=["default", "uncapped"])
def test_a_huge_answer_without_a_sentence_break_is_spoken_in_bounded_segments(
    serve, tmp_path, segmenter
):
    words = [f"w{i}" for i in range(300_000)]
    words[1000] = "x" * 5000  # one word longer than a segment: cut hard
    answer = " ".join(words)  # 2.3 MB, not one sentence break
    deltas = [answer[i : i + 4096] for i in range(0, len(answer), 4096)]
    speaker = FakeSpeaker(length=lambda text: 320)
    # None: the server's own (docs/protocol.md#segments); SentenceSegmenter: one that does not
    # cap segments itself (the pipeline still does)
    # no answer cap (max_answer_chars: tests/test_backend_faults.py): the segmenting is tested
    settings = Settings(max_answer_chars=None, llm_answer_s=None, turn_s=None)
    app, _ = build(
        tmp_path,
        speaker=speaker,
        script=lambda _text: deltas,
        segmenter=segmenter,
        settings=settings,
    )
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "huge")
        await d.command("Text", input="talk")
        frames = await d.until_bytes(output.END_RESPONSE, timeout=60)
        await d.close()
        return frames

    frames = run(main())
    starts = [fr for fr in frames if name(decode_event(fr)) == "StartAudio"]
    assert len(starts) > len(answer) // MAX_SEGMENT_BYTES
    assert max(len(fr) for fr in starts) <= MAX_SEGMENT_BYTES + 32  # the text and its envelope
    events = [decode_event(fr) for fr in frames]
    assert "DisplayText" not in [name(e) for e in events]
    texts = [text for text, audio in segments(events) if audio]
    assert len(texts) == len(starts)  # every segment spoken
    assert texts == speaker.started  # one TTS request per segment, in order
    assert all(len(t.encode()) <= MAX_SEGMENT_BYTES for t in texts)
    # nothing lost, nothing reordered, and no word but the over-long one is cut
    assert "".join(texts).replace(" ", "") == answer.replace(" ", "")
    spoken = " ".join(texts).split()
    assert [w for w in spoken if not w.startswith("x")] == words[:1000] + words[1001:]


def test_an_interim_transcript_is_capped_like_a_final_one(serve, tmp_path):
    said = "word " * 1_000_000  # 5 MB
    app, _ = build(tmp_path, transcriber=FakeTranscriber(text=said))
    addr = serve(app)
    first = _fixture()[2 * PREROLL : 2 * 72000]  # the speech, then a pause: an interim round

    async def main():
        d = await Device.open(addr, "long-asr", opus=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(first + SPEECH + SILENCE)
        frames = await d.until_bytes(output.END_RESPONSE)
        await d.close()
        return frames

    events = [decode_event(fr) for fr in run(main())]
    transcripts = [e["ASR"]["text"] for e in events if name(e) == "ASR"]
    assert len(transcripts) == 2  # interim, final
    assert transcripts == [cut_text(said, 4096)] * 2


@pytest.mark.parametrize(
    ("event", "kind"),
    [(output.start_audio, "StartAudio"), (output.asr, "ASR"), (output.display_text, "DisplayText")],
)
def test_no_event_text_is_longer_than_the_cap(event, kind):
    text = "a few words " * 1000
    assert decode_event(event(text, 100)) == {kind: {"text": cut_text(text, 100)}}
    assert len(cut_text(text, 100).encode()) <= 100
    assert decode_event(event("short", 100)) == {kind: {"text": "short"}}

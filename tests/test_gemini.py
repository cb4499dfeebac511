"""The Gemini Live layouts over real sockets: a device (tests/device_fakes.py) talks to the
server, which talks to a Gemini Live stand-in (tests/gemini_standin.py) speaking the real wire
format. ``[gemini]`` alone: Gemini's 24 kHz speech reaches the device at 16 kHz; ``[gemini]`` +
``[tts]``: Gemini answers in text and the TTS stand-in speaks it. The configs are the
reference's examples with the endpoint pointed at the stand-in.
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import pytest
from device_fakes import Device, name
from gemini_standin import PATH, RATE, Answer, GeminiServer, GoAway, running_gemini
from harness import free_port
from standins import Fail, TTSServer

from echokit_fast.audio import OpusDecoder, float_to_pcm16, pcm16_to_float, resample
from echokit_fast.backends.gemini import wire
from echokit_fast.backends.gemini.client import CUT, KEY_REFUSED, SETUP_FAILED
from echokit_fast.config import parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = DATA / "configs" / "examples" / "gemini"
SR = 16000
FRAME = 16384
FIRMWARE = {"opus": True, "vowel": True, "stream_asr": True}


def speech() -> bytes:
    """An utterance as the firmware uploads it: from 256 ms before the speech, then 2 s of
    silence."""
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return pcm[2 * 4096 :] + bytes(2 * SR * 2)


def config(example: str, url: str, *, tts: str = "", **gemini: object):
    """The reference's example config ``example``, its ``[gemini]`` pointed at ``url`` (plus
    ``gemini`` keys), its ``[tts]`` at the stand-in ``tts`` when given."""
    text = (EXAMPLES / example / "config.toml").read_text()
    keys = {"url": url, **gemini}
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    text = text.replace("[gemini]\n", f"[gemini]\n{lines}", 1)
    if tts:
        text = text.replace("localhost:9094", tts)
    return parse_config(text, filename=f"{example}/config.toml", log_issues=False).config


def app(serve, cfg) -> tuple[str, AppState]:
    ctx = AppState(cfg, probe_llm=False)
    return serve(create_app(state=ctx)), ctx


async def voice_turn(dev: Device, timeout: float = 30) -> list:
    await dev.command("StartChat")
    await dev.audio(speech(), FRAME)
    return await dev.until("EndResponse", timeout)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def spoken_16k(answer: Answer) -> bytes:
    """Gemini's speech as the device must get it: resampled to 16 kHz."""
    return float_to_pcm16(resample(pcm16_to_float(answer.pcm()), RATE, SR))


def notice_tail(notice: str) -> list:
    """How a failed turn ends (docs/protocol.md#failures-and-notices): no TTS, so not spoken."""
    return [
        {"DisplayText": {"text": notice}},
        {"StartAudio": {"text": notice}},
        "EndAudio",
        "EndResponse",
    ]


# --------------------------------------------------------------------------------------------
# the two layouts hold a turn
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opus", [True, False], ids=["firmware", "raw"])
def test_gemini_layout_speaks_geminis_audio_at_16k(serve, opus: bool) -> None:
    gemini = GeminiServer()
    answer = Answer(heard="What's the weather like in Paris?", said=["It is sunny", " in Paris."])
    gemini.script.append(answer)
    with running_gemini(gemini) as url:
        addr, _ = app(serve, config("live", url))

        async def go() -> list:
            flags = FIRMWARE if opus else {"stream_asr": True}
            dev = await Device.open(addr, "a0b1c2d3e4f5", **flags)
            events = await voice_turn(dev)
            await dev.close()
            return events

        events = run(go())

    names = [name(e) for e in events]
    # the server's VAD ended the turn (the firmware never sends Submit), Gemini's transcript
    # of the user, one segment titled with the start of Gemini's transcript, its speech
    assert names[0] == "EndVad"
    assert events[1] == {"ASR": {"text": "What's the weather like in Paris?"}}
    assert events[2] == {"StartAudio": {"text": "It is sunny"}}
    assert names[-2:] == ["EndAudio", "EndResponse"] and names.count("StartAudio") == 1
    expected = spoken_16k(answer)
    if opus:
        assert set(names[3:-2]) == {"AudioChunkWithVowel"}
        dec = OpusDecoder(SR)
        decoded = sum(len(dec.decode(e["AudioChunkWithVowel"]["data"])) for e in events[3:-2])
        assert decoded == -(-len(expected) // 2 // 1920) * 1920  # the tail zero-padded
    else:
        assert b"".join(bytes(e["AudioChunk"]["data"]) for e in events[3:-2]) == expected

    # what Gemini got: the reference's URL, header and setup, then the user's turn
    conn = gemini.connections[0]
    assert conn.path == f"{PATH}?key=ABCD-1234-xyz"
    assert conn.headers["x-goog-api-key"] == "ABCD-1234-xyz"
    prompt = config("live", url).gemini.sys_prompts[0].content
    assert conn.setup == (
        '{"setup":{"generationConfig":{"responseModalities":["AUDIO"]},'
        '"inputAudioTranscription":{},"model":"models/gemini-2.0-flash-exp",'
        '"outputAudioTranscription":{},'
        '"realtimeInputConfig":{"automaticActivityDetection":{"disabled":true}},'
        '"systemInstruction":{"parts":[{"text":' + json.dumps(prompt) + "}]}}}"
    )
    assert conn.kinds() == ["activityStart", "audio", "activityEnd"]
    audio = [i["audio"] for i in conn.inputs() if "audio" in i]
    assert {a["mime_type"] for a in audio} == {"audio/pcm;rate=16000"}
    assert conn.messages[1].startswith('{"realtime_input":{"audio":{"data":"')
    heard = conn.audio()
    assert speech().startswith(heard) and len(heard) > 2 * SR  # up to the end of the turn


def test_gemini_tts_layout_speaks_geminis_text_with_the_tts(serve) -> None:
    gemini, tts = GeminiServer(), TTSServer()
    said = ["It is sunny in Paris. ", "Take your sunglasses and enjoy the walk!"]
    gemini.script.append(Answer(heard="Weather in Paris?", said=said))
    with running_gemini(gemini) as url:
        cfg = config("singapore", url, tts=serve(tts.app))
        addr, _ = app(serve, cfg)

        async def go() -> list:
            dev = await Device.open(addr, "a0b1c2d3e4f5", **FIRMWARE)
            events = await voice_turn(dev)
            await dev.close()
            return events

        events = run(go())

    names = [name(e) for e in events]
    assert names[:2] == ["EndVad", "ASR"] and events[1] == {"ASR": {"text": "Weather in Paris?"}}
    segments = [e["StartAudio"]["text"] for e in events if name(e) == "StartAudio"]
    assert segments == ["It is sunny in Paris.", "Take your sunglasses and enjoy the walk!"]
    assert sorted(r.json["input"] for r in tts.requests) == sorted(segments)
    assert all(r.json["speaker"] == "cooper" for r in tts.requests)
    dec, decoded = OpusDecoder(SR), 0
    for ev in events:
        if name(ev) == "StartAudio":
            dec.reset()
        elif name(ev) == "AudioChunkWithVowel":
            decoded += len(dec.decode(ev["AudioChunkWithVowel"]["data"]))
    assert decoded == sum(-(-round(tts.duration(s) * SR) // 1920) * 1920 for s in segments)
    assert names[-2:] == ["EndAudio", "EndResponse"]
    setup = json.loads(gemini.connections[0].setup)["setup"]
    assert setup["generationConfig"] == {"responseModalities": ["TEXT"]}
    assert "outputAudioTranscription" not in setup and setup["inputAudioTranscription"] == {}
    assert setup["systemInstruction"]["parts"][0]["text"].startswith("You an expert in Singapore")


def test_submit_mode_and_typed_text_are_turns_too(serve) -> None:
    """Without stream_asr the device's Submit ends the utterance (activityEnd), as in the
    reference; a Text is echoed and sent as realtime text between the activity marks."""
    gemini = GeminiServer()
    with running_gemini(gemini) as url:
        addr, _ = app(serve, config("live", url))

        async def go() -> tuple[list, list]:
            dev = await Device.open(addr, "dev1")
            await dev.audio(speech(), FRAME)
            await dev.command("Submit")
            submitted = await dev.until("EndResponse")
            await dev.command("Text", input="Tell me a joke")
            typed = await dev.until("EndResponse")
            await dev.close()
            return submitted, typed

        submitted, typed = run(go())

    assert "EndVad" not in map(name, submitted)
    assert submitted[0] == {"ASR": {"text": Answer().heard}}
    assert typed[0] == {"ASR": {"text": "Tell me a joke"}}
    for events in (submitted, typed):
        assert [name(e) for e in events][-2:] == ["EndAudio", "EndResponse"]
        assert {"StartAudio": {"text": "It is sunny"}} in events
    conn = gemini.connections[0]
    assert len(gemini.connections) == 1
    assert conn.kinds() == [
        *("activityStart", "audio", "activityEnd"),
        *("activityStart", "text", "activityEnd"),
    ]
    assert conn.audio() == speech()  # Submit mode: everything the device sent
    assert {"text": "Tell me a joke"} in conn.inputs()


# --------------------------------------------------------------------------------------------
# one socket per device
# --------------------------------------------------------------------------------------------


def test_one_socket_per_device_kept_across_reconnects_closed_when_the_session_goes(serve) -> None:
    gemini = GeminiServer()
    with running_gemini(gemini) as url:
        addr, ctx = app(serve, config("live", url))

        async def text_turn(device_id: str, **flags: bool) -> list:
            dev = await Device.open(addr, device_id, **flags)
            await dev.command("Text", input="hi")
            events = await dev.until("EndResponse")
            await dev.close()
            return events

        async def go() -> None:
            await text_turn("a")
            await text_turn("a", reconnect=True)  # the same context: the same socket
            assert len(gemini.connections) == 1
            await text_turn("b")  # another device: its own socket
            assert len(gemini.connections) == 2
            await text_turn("a")  # a fresh connection: a fresh context
            assert len(gemini.connections) == 3
            assert await asyncio.to_thread(gemini.connections[0].closed.wait, 10)
            assert not gemini.connections[1].closed.is_set()
            # the session of "b" is dropped (as after session_ttl): its socket is closed
            manager = ctx.sessions
            assert manager is not None and manager.loop is not None

            async def drop_b() -> None:  # on the server's loop
                assert await manager.wait_until(lambda m: m.sessions["b"].conn is None, 10)
                manager._evict(manager.sessions["b"])

            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drop_b(), manager.loop))
            assert "b" not in manager.sessions
            assert await asyncio.to_thread(gemini.connections[1].closed.wait, 10)

        run(go())


def test_an_interrupted_answer_does_not_leak_into_the_next_turn(serve) -> None:
    """The firmware barges in (reconnect + StartChat) during an answer: Gemini interrupts it
    (interrupted, turnComplete); what was left of it is not the new turn's answer."""
    gemini = GeminiServer()
    gemini.stream_delay = 0.1  # the first answer takes 8 s to send: it is interrupted long before
    first = Answer(heard="Tell me a story", said=[f" word{i}" for i in range(40)], seconds=4)
    second = Answer(heard="Stop. What time is it?", said=["It is noon."])
    gemini.script.extend([first, second])
    with running_gemini(gemini) as url:
        addr, _ = app(serve, config("live", url))

        async def go() -> tuple[list, list]:
            dev = await Device.open(addr, "box", **FIRMWARE)
            await dev.command("StartChat")
            await dev.audio(speech(), FRAME)
            before = await dev.until("StartAudio")
            barge = await Device.open(addr, "box", reconnect=True, **FIRMWARE)
            after = await voice_turn(barge)
            old = await dev.until("EndResponse")  # the pre-empted socket's own EndResponse
            await barge.close()
            return before + old, after

        before, after = run(go())

    assert before[-1] == "EndResponse" and "EndAudio" not in before
    assert after[1] == {"ASR": {"text": "Stop. What time is it?"}}
    assert [e for e in after if name(e) == "StartAudio"] == [
        {"StartAudio": {"text": "It is noon."}}
    ]
    assert len(gemini.connections) == 1
    kinds = gemini.connections[0].kinds()
    assert kinds == ["activityStart", "audio", "activityEnd"] * 2


# --------------------------------------------------------------------------------------------
# goAway and failures
# --------------------------------------------------------------------------------------------


def test_go_away_says_bye_bye_and_the_next_turn_opens_a_new_session(serve) -> None:
    gemini = GeminiServer()
    gemini.script.extend([GoAway(), Answer()])
    with running_gemini(gemini) as url:
        addr, _ = app(serve, config("live", url))

        async def go() -> tuple[list, list]:
            dev = await Device.open(addr, "dev", **FIRMWARE)
            bye = await voice_turn(dev)
            again = await voice_turn(dev)
            # the socket that went away was closed by the server
            assert await asyncio.to_thread(gemini.connections[0].closed.wait, 10)
            await dev.close()
            return bye, again

        bye, again = run(go())

    assert bye == ["EndVad", {"Action": {"action": "ByeBye"}}, "EndResponse"]
    assert {"StartAudio": {"text": "It is sunny"}} in again and again[-1] == "EndResponse"
    assert len(gemini.connections) == 2


FAILURES = {
    "connection refused": ({}, "Gemini is not reachable."),
    "key refused (HTTP 403)": ({"refuse_once": 403}, "Gemini refused the API key (HTTP 403)."),
    "setup refused": (
        {"setup_close": (1007, "Request contains an invalid argument.")},
        SETUP_FAILED,
    ),
    "key refused at setup": (
        {"setup_close": (1008, "API key not valid. Please pass a valid API key.")},
        KEY_REFUSED,
    ),
    "cut mid-answer": ({"script": [Fail(cut_after=3)]}, CUT),
    "no answer in time": ({"script": [Fail(hang=True)]}, "Gemini did not answer in time."),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failure_is_a_notice_and_the_server_keeps_serving(serve, case: str) -> None:
    knobs, notice = FAILURES[case]
    gemini = GeminiServer()
    for key, value in knobs.items():
        if key == "script":
            gemini.script.extend(value)
        else:
            setattr(gemini, key, value)
    with running_gemini(gemini) as url:
        if case == "connection refused":
            url = f"ws://127.0.0.1:{free_port()}{PATH}"
        # a short deadline for the answer that never comes (the others come at once)
        limit = {"reply_timeout_s": 1.5} if case == "no answer in time" else {}
        cfg = config("live", url, **limit)
        addr, _ = app(serve, cfg)

        async def go() -> tuple[list, list, list]:
            dev = await Device.open(addr, "first", **FIRMWARE)
            failed = await voice_turn(dev)
            gemini.setup_close = None
            other = await Device.open(addr, "second", **FIRMWARE)
            others = await voice_turn(other)
            again = await voice_turn(dev)
            await dev.close()
            await other.close()
            return failed, others, again

        failed, others, again = run(go())

    assert failed[0] == "EndVad" and failed[-4:] == notice_tail(notice)
    if case == "cut mid-answer":  # the segment begun is ended before the notice
        assert [name(e) for e in failed[:3]] == ["EndVad", "ASR", "StartAudio"]
        assert failed[-5] == "EndAudio"
    else:
        assert len(failed) == 5
    if case == "connection refused":  # every turn says so, the server goes on
        assert others[-4:] == notice_tail(notice) and again[-4:] == failed[-4:]
        return
    # another device, and the same one again (on a new socket), hold a turn
    for events in (others, again):
        assert {"StartAudio": {"text": "It is sunny"}} in events, events
        assert [name(e) for e in events][-2:] == ["EndAudio", "EndResponse"]


def test_server_messages_are_read_whole() -> None:
    """Every member of a message counts (the reference reads one serverContent key and fails
    on top-level setupComplete / goAway); thoughts and non-audio parts are skipped."""
    message = json.dumps(
        {
            "serverContent": {
                "inputTranscription": {"text": "hi"},
                "modelTurn": {
                    "parts": [
                        {"text": "thinking", "thought": True},
                        {"text": "Hello"},
                        {"inlineData": {"mimeType": "audio/pcm;rate=22050", "data": "AAEC"}},
                        {"inlineData": {"mimeType": "image/png", "data": "AAEC"}},
                    ]
                },
                "outputTranscription": {"text": "Hello"},
                "turnComplete": True,
            },
            "usageMetadata": {"totalTokenCount": 3},
            "goAway": {"timeLeft": "5s"},
        }
    ).encode()
    assert wire.parse(message) == [
        wire.InputText("hi"),
        wire.ModelText("Hello"),
        wire.ModelAudio(b"\x00\x01", 22050),
        wire.OutputText("Hello"),
        wire.TurnComplete(),
        wire.GoAway("5s"),
    ]
    assert wire.parse('{"setupComplete": {}}') == [wire.SetupComplete()]
    with pytest.raises(ValueError):
        wire.parse("[1]")

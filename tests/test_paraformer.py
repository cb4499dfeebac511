"""``[asr] platform = "paraformer_v2"`` over real sockets: the DashScope wire format against the
stand-in of tests/ws_standins.py, and devices whose turns it recognizes -- streamed while
the user speaks (``stream_asr``: interim ``ASR`` events, the recognizer's sentence end ends the
turn) or sent after ``Submit`` -- including every way the recognizer can fail."""

from __future__ import annotations

import asyncio
import re
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from device_fakes import Device, name, tone
from standins import ChatServer, Fail, TTSServer
from test_device import build, decode_segment, run, segments
from vdev import vdev
from ws_standins import ParaformerServer, VendorError, running_ws_server

from echokit_fast.audio import float_to_pcm16, write_wav
from echokit_fast.backends import registry, ws
from echokit_fast.backends.asr.paraformer_v2 import ParaformerTranscriber, ParaformerV2ASR
from echokit_fast.backends.base import BackendError
from echokit_fast.config import parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"
TOKEN = "sk-test"
FRAME = 16384
#: 1 s the stand-in hears as speech (ten loud 100 ms blocks), then 0.6 s of quiet: the
#: stand-in ends the sentence after 500 ms of it, in the third 16 384-byte frame
SPOKEN = float_to_pcm16(tone(16000, 300.0)) + bytes(2 * 9600)
SENTENCE = "hello world how are you"
INTERIMS = ["hello", "hello world", "hello world how", "hello world how are", SENTENCE]


def _speech() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        return w.readframes(w.getnframes())[2 * 4096 :]


@pytest.fixture
def asr():
    server = ParaformerServer(TOKEN)
    with running_ws_server(server) as addr:
        server.url = f"ws://{addr}/api-ws/v1/inference"
        yield server


def cfg(asr: ParaformerServer, **kw: Any) -> ParaformerV2ASR:
    return ParaformerV2ASR(paraformer_token=TOKEN, url=asr.url, **kw)


def arrange(asr: ParaformerServer, failure: int | Any) -> None:
    """An HTTP status refuses every handshake; anything else is the next task's script item."""
    if isinstance(failure, int):
        asr.refuse = failure
    else:
        asr.script.append(failure)


async def transcribed(asr: ParaformerServer, cfg: ParaformerV2ASR, x: np.ndarray, **kw: Any):
    """``transcribe(x)``, then (whatever the outcome) until the stand-in saw its connection
    closed, when there was one: the client leaves nothing open."""
    try:
        return await ParaformerTranscriber(cfg).transcribe(x, **kw)
    finally:
        if asr.connections:
            assert await asyncio.to_thread(asr.closed.wait, 10), "the connection was left open"


def device_app(tmp_path: Path, asr: ParaformerServer, **kw: Any):
    """The device server with the real Paraformer client (fake TTS and LLM); its turn
    detectors are chosen at start-up as for any config."""
    return build(tmp_path, transcriber=ParaformerTranscriber(cfg(asr, **kw)))


# --- the wire format -------------------------------------------------------------------------


def test_transcribe_speaks_the_dashscope_wire_format(asr):
    asr.say("Hello world.", "軟體和滑鼠")
    x = np.concatenate([tone(16000), np.zeros(12000, np.float32), tone(8000)])
    text = run(transcribed(asr, cfg(asr), x))
    # every sentence of the task, joined; Traditional -> Simplified
    assert text == "Hello world.软件和鼠标"
    (hs,) = asr.handshakes
    assert hs.headers["authorization"] == f"Bearer {TOKEN}"
    assert hs.headers["x-dashscope-datainspection"] == "enable"
    (task,) = asr.tasks
    task_id = task.run_task["header"]["task_id"]
    assert str(uuid.UUID(task_id)) == task_id
    assert task.run_task == {
        "header": {"action": "run-task", "task_id": task_id, "streaming": "duplex"},
        "payload": {
            "task_group": "audio",
            "task": "asr",
            "function": "recognition",
            "model": "paraformer-realtime-v2",
            "parameters": {
                "format": "pcm",
                "sample_rate": 16000,
                "semantic_punctuation_enabled": False,  # a recorded utterance
            },
            "input": {},
        },
    }
    assert task.raw == ws.dumps(task.run_task)  # as serde_json writes it: compact, keys sorted
    assert bytes(task.audio) == float_to_pcm16(x)
    assert task.finish_task == ws.dumps(
        {
            "header": {"action": "finish-task", "task_id": task_id, "streaming": "duplex"},
            "payload": {"task_group": "audio", "input": {}},
        }
    )


def test_transcribe_resamples_to_16k(asr):
    run(transcribed(asr, cfg(asr), tone(8000), sample_rate=8000))
    assert len(asr.tasks[0].audio) == 2 * 16000  # 0.5 s at 16 kHz


@pytest.mark.parametrize(
    ("failure", "notice"),
    [
        (403, "The speech recognizer refused the API key (HTTP 403)."),
        (VendorError("Throttling"), "The speech recognizer failed (Throttling)."),
        (Fail(cut_after=6400), "The speech recognizer's connection was cut off."),
        (Fail(hang=True), "The speech recognizer did not answer in time."),  # no task-started
        (Fail(delay=30), "The speech recognizer did not answer in time."),  # task-finished late
    ],
    ids=["refused", "task-failed", "cut", "slow-start", "slow-finish"],
)
def test_transcribe_failures_are_notices(asr, failure, notice):
    arrange(asr, failure)
    with pytest.raises(BackendError) as err:
        run(transcribed(asr, cfg(asr, timeout_s=0.5), tone(16000)))
    assert err.value.notice == notice and err.value.backend == "asr"


def test_a_wrong_token_and_no_server_are_notices(asr):
    wrong = ParaformerV2ASR(paraformer_token="sk-wrong", url=asr.url)
    with pytest.raises(BackendError, match="HTTP 401") as err:
        run(transcribed(asr, wrong, tone(1600)))
    assert err.value.notice == "The speech recognizer refused the API key (HTTP 401)."
    assert len(asr.handshakes) == 1  # a refused key is not retried
    gone = ParaformerV2ASR(paraformer_token=TOKEN, url="ws://127.0.0.1:1/api-ws/v1/inference")
    with pytest.raises(BackendError, match="attempt 3") as err:
        run(ParaformerTranscriber(gone).transcribe(tone(1600)))
    assert err.value.notice == "The speech recognizer is not reachable."


def test_a_5xx_handshake_is_tried_3_times(asr):
    asr.refuse = 503
    with pytest.raises(BackendError, match="attempt 3") as err:
        run(transcribed(asr, cfg(asr), tone(16000)))
    assert err.value.notice == "The speech recognizer failed (HTTP 503)."
    assert len(asr.handshakes) == 3


# --- devices ---------------------------------------------------------------------------------


def test_stream_asr_interim_results_and_the_recognizers_end_of_turn(serve, tmp_path, asr):
    app, f = device_app(tmp_path, asr)
    addr = serve(app)
    asr.say(SENTENCE)
    asr.say("again")

    async def main():
        d = await Device.open(addr, "pf1", opus=True, vowel=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(SPOKEN)  # then nothing more: only the recognizer can end this turn
        first = await d.until()
        await d.command("StartChat")
        await d.audio(SPOKEN)
        second = await d.until()
        await d.close()
        return first, second

    first, second = run(main())
    names = [name(e) for e in first]
    # docs/protocol.md#stream-mode: the recognizer's partial results as interim ASRs, EndVad at
    # its sentence end, the final ASR, the answer
    assert names[:7] == ["ASR"] * 5 + ["EndVad", "ASR"], names
    assert [e["ASR"]["text"] for e in first[:5]] == INTERIMS
    assert first[6] == {"ASR": {"text": SENTENCE}}
    assert [t for t, _ in segments(first)] == ["Hello there.", "How are you?", "Fine."]
    assert names[-1] == "EndResponse" and names.count("EndResponse") == 1
    assert f.convs.of("pf1").history[0] == {"role": "user", "content": SENTENCE}
    # the sentence ended in the frame that completed 500 ms of quiet; the audio was streamed to
    # the recognizer as it came, in one task per utterance (semantic punctuation on, as the
    # reference streams), ended by finish-task
    t1, t2 = asr.tasks
    assert t1.audio_at_first_final == 3 * FRAME
    assert bytes(t1.audio) == SPOKEN[: len(t1.audio)]
    assert t1.run_task["payload"]["parameters"]["semantic_punctuation_enabled"] is True
    assert t1.finish_task is not None
    again = [name(e) for e in second].index("EndVad")
    assert second[again + 1] == {"ASR": {"text": "again"}}
    assert t2.run_task["header"]["task_id"] != t1.run_task["header"]["task_id"]


def test_submit_while_streaming_ends_the_audio_and_the_recognizer_finishes(serve, tmp_path, asr):
    app, _f = device_app(tmp_path, asr)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "pf7", opus=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(SPOKEN[: 2 * FRAME])  # still talking: no sentence end yet
        await d.command("Submit")
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    names = [name(e) for e in events]
    i = names.index("EndVad")
    assert names[:i] == ["ASR"] * i  # interim ones
    assert events[i + 1] == {"ASR": {"text": "hello world"}}  # finish-task ended the sentence
    (task,) = asr.tasks
    assert task.finish_task is not None and task.audio_at_first_final is not None


def test_submit_mode_sends_the_recorded_utterance(serve, tmp_path, asr):
    app, _f = device_app(tmp_path, asr)
    addr = serve(app)
    speech = _speech()

    async def main():
        d = await Device.open(addr, "pf2", opus=True)
        await d.command("StartChat")
        await d.audio(speech)
        await d.command("Submit")
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    names = [name(e) for e in events]
    assert names[0] == "ASR" and events[0] == {"ASR": {"text": "hello world"}}
    assert "EndVad" not in names and names.count("ASR") == 1 and names[-1] == "EndResponse"
    (task,) = asr.tasks  # one task, after the end of the turn, with the whole utterance
    assert bytes(task.audio) == speech
    assert task.run_task["payload"]["parameters"]["semantic_punctuation_enabled"] is False


@pytest.mark.parametrize(
    ("failure", "notice"),
    [
        (401, "The speech recognizer refused the API key (HTTP 401)."),
        (VendorError(), "The speech recognizer failed (InternalError)."),
        (Fail(cut_after=FRAME), "The speech recognizer's connection was cut off."),
        (Fail(hang=True), "The speech recognizer did not answer in time."),
    ],
    ids=["auth-refused", "task-failed", "cut-mid-stream", "slow-start"],
)
def test_stream_failures_are_spoken_and_the_server_goes_on(serve, tmp_path, asr, failure, notice):
    app, f = device_app(tmp_path, asr, timeout_s=0.5)
    addr = serve(app)
    arrange(asr, failure)

    async def main():
        d = await Device.open(addr, "pf3", opus=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(SPOKEN)
        events = await d.until()
        asr.refuse = None
        await d.command("StartChat")
        await d.audio(SPOKEN)
        again = await d.until()
        await d.close()
        return events, again

    events, again = run(main())
    names = [name(e) for e in events]
    assert "EndVad" in names and names[-1] == "EndResponse" and names.count("EndResponse") == 1
    assert names.count("ASR") == names.index("EndVad")  # interim ones only, if any
    i = names.index("DisplayText")
    assert events[i] == {"DisplayText": {"text": notice}}
    (seg,) = segments(events[i + 1 : -1])
    assert seg[0] == notice and len(decode_segment(seg[1])) > 0  # shown and spoken
    # the next utterance is recognized as usual; the failed one never reached the LLM
    assert [name(e) for e in again][-1] == "EndResponse"
    assert {"ASR": {"text": "hello world"}} in again
    history = f.convs.of("pf3").history
    assert [m["content"] for m in history if m["role"] == "user"] == ["hello world"]


def test_quiet_audio_ends_the_turn_after_5_s_without_text(serve, tmp_path, asr):
    app, _f = device_app(tmp_path, asr)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "pf4", opus=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(bytes(2 * 16000 * 6))  # 6 s of silence: no result at all
        events = await d.until()
        await d.close()
        return events

    assert run(main()) == ["EndVad", "EndResponse"]
    (task,) = asr.tasks
    assert len(task.audio) >= 5 * 32000 and task.finish_task is not None


def test_a_text_input_drops_the_streamed_utterance(serve, tmp_path, asr):
    app, f = device_app(tmp_path, asr)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "pf5", opus=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(SPOKEN[:FRAME])
        assert await asyncio.to_thread(asr.heard.wait, 10)  # the task is running
        await d.command("Text", input="typed")
        events = await d.until()
        closed = await asyncio.to_thread(asr.closed.wait, 10)
        await d.close()
        return events, closed

    events, closed = run(main())
    assert "typed" in [e["ASR"]["text"] for e in events if name(e) == "ASR"]
    assert closed  # the recognizer's connection of the dropped utterance is closed
    assert asr.tasks[0].finish_task is None
    assert f.convs.of("pf5").history[0] == {"role": "user", "content": "typed"}


# --- from a config file ----------------------------------------------------------------------


def test_a_paraformer_config_serves_streamed_turns(serve, tmp_path, asr):
    chat, tts = ChatServer(), TTSServer()
    chat_addr, tts_addr = serve(chat.app), serve(tts.app)
    chat.reply(["Fine, thanks."])
    text = f"""
addr = "127.0.0.1:0"
[asr]
platform = "ParaformerV2"
url = "{asr.url}"
paraformer_token = "{TOKEN}"
[tts]
platform = "openai"
url = "http://{tts_addr}/v1/audio/speech"
api_key = "k"
voice = "ash"
[llm]
platform = "openai_chat"
url = "http://{chat_addr}/v1/chat/completions"
history = 5
"""
    config = parse_config(text, env={}, log_issues=False).config
    assert registry.unsupported(config) == []
    state = AppState(config)
    state.record_dir = tmp_path / "record"
    addr = serve(create_app(state=state))
    asr.say(SENTENCE)

    async def main():
        d = await Device.open(addr, "pf6", opus=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(SPOKEN)
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    names = [name(e) for e in events]
    assert names[:7] == ["ASR"] * 5 + ["EndVad", "ASR"], names
    assert events[6] == {"ASR": {"text": SENTENCE}}
    assert [t for t, _ in segments(events)] == ["Fine, thanks."]
    assert chat.requests[0].json["messages"][-1] == {"role": "user", "content": SENTENCE}


def test_the_reference_alibailian_example_config_is_accepted():
    path = DATA / "configs" / "examples" / "alibailian" / "config.toml"
    config = parse_config(path.read_text(), env={}, log_issues=False).config
    assert isinstance(config.asr, ParaformerV2ASR)
    assert config.asr.url == "wss://dashscope.aliyuncs.com/api-ws/v1/inference"
    assert config.asr.paraformer_token == "sk-API-KEY"
    assert registry.unsupported(config) == []  # (its [tts] is cosyvoice) served as it is


# --- the virtual device ------------------------------------------------------------------------


def test_the_virtual_device_hears_interim_and_final_transcripts(serve, tmp_path, asr):
    app, _f = device_app(tmp_path, asr)
    addr = serve(app)
    asr.say(SENTENCE)
    wav = tmp_path / "q.wav"
    wav.write_bytes(write_wav(tone(16000, 300.0), 16000))
    result = vdev(addr, wav, out=tmp_path / "vdev", args=("--speed", "0", "--no-hello"))
    assert result.returncode == 0, result.describe()
    (turn,) = result.turns()
    assert turn["asr"][-1] == SENTENCE and len(turn["asr"]) > 1
    assert all(re.fullmatch(r"hello( \w+)*", t) for t in turn["asr"])
    assert turn["end_vad"] is True and turn["segments"]

"""The WebSocket TTS platforms ``cosyvoice`` (DashScope) and ``elevenlabs`` (stream-input) over
real loopback sockets, against the stand-ins of tests/ws_standins.py: the wire as the reference
sends it, the audio, the failures as notices, and whole device turns through the server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from device_fakes import Conversations, Device, FakeTranscriber, SentenceSegmenter, name
from harness import free_port
from standins import ChatServer, Fail
from ws_standins import (
    CosyVoiceServer,
    Drop,
    ElevenLabsServer,
    Raw,
    VendorError,
    running_ws_server,
)

from echokit_fast import audio
from echokit_fast.audio import OpusDecoder, pcm16_to_float
from echokit_fast.backends import registry
from echokit_fast.backends.base import BackendError, Backends
from echokit_fast.backends.tts.cosyvoice import CosyVoiceSpeaker, CosyVoiceTTS
from echokit_fast.backends.tts.elevenlabs import ElevenLabsSpeaker, ElevenLabsTTS
from echokit_fast.config import ConfigError, default_config, parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

SR = 16000
DATA = Path(__file__).resolve().parent / "data"

REPORTED = "The speech synthesizer reported an error."
CUT = "The speech synthesizer's audio was cut off."
TIMEOUT = "The speech synthesizer did not answer in time."
BAD = "The speech synthesizer sent a bad answer."


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def cosy():
    server = CosyVoiceServer()
    with running_ws_server(server) as addr:
        server.addr = addr
        yield server


@pytest.fixture
def eleven():
    server = ElevenLabsServer()
    with running_ws_server(server) as addr:
        server.addr = addr
        yield server


def cosy_speaker(server: CosyVoiceServer, **kw: Any) -> CosyVoiceSpeaker:
    cfg = {"token": "sk-1", "url": f"ws://{server.addr}/api-ws/v1/inference"}
    return CosyVoiceSpeaker(CosyVoiceTTS.model_validate({**cfg, **kw.pop("cfg", {})}), **kw)


def eleven_speaker(server: ElevenLabsServer, **kw: Any) -> ElevenLabsSpeaker:
    cfg = {"token": "xi-1", "voice": "V0ice", "url": f"ws://{server.addr}/v1/text-to-speech"}
    return ElevenLabsSpeaker(ElevenLabsTTS.model_validate({**cfg, **kw.pop("cfg", {})}), **kw)


async def speak(speaker: Any, *texts: str, rate: int = SR) -> list[np.ndarray]:
    """Each text spoken in turn (one array each); the speaker is closed afterwards."""
    try:
        out = []
        for text in texts:
            chunks = [c async for c in speaker.speak(text, sample_rate=rate)]
            assert all(c.dtype == np.float32 and len(c) for c in chunks)
            out.append(np.concatenate(chunks))
        return out
    finally:
        close = getattr(speaker, "aclose", None)
        if close is not None:
            await close()


def expected(server: Any, text: str, rate: int = SR) -> np.ndarray:
    return pcm16_to_float(server.pcm(text, rate))


# --------------------------------------------------------------------------------------------
# cosyvoice
# --------------------------------------------------------------------------------------------


def test_cosyvoice_wire_is_the_references_and_one_connection_serves_the_segments(cosy):
    texts = ["Hello there, how are you?", "你好，我是 CosyVoice。"]
    got = run(speak(cosy_speaker(cosy, cfg={"speaker": "longhua_v2"}), *texts))
    for text, pcm in zip(texts, got, strict=True):
        np.testing.assert_array_equal(pcm, expected(cosy, text))
    assert cosy.connections == 1 and cosy.completed == 2  # kept for the second segment
    (hs,) = cosy.handshakes
    assert hs.path == "/api-ws/v1/inference"
    assert hs.headers["authorization"] == "Bearer sk-1"
    assert hs.headers["x-dashscope-datainspection"] == "enable"
    ids = [json.loads(t)["header"]["task_id"] for t in cosy.tasks]
    assert len(set(ids)) == 2 and all(uuid.UUID(i).version == 4 for i in ids)
    for task, finish, text, task_id in zip(cosy.tasks, cosy.finishes, texts, ids, strict=True):
        # byte for byte what the reference's serde_json writes (compact, keys sorted, UTF-8)
        assert task == (
            '{"header":{"action":"run-task","streaming":"duplex","task_id":"' + task_id + '"},'
            '"payload":{"function":"SpeechSynthesizer","input":{"text":"' + text + '"},'
            '"model":"cosyvoice-v2","parameters":{"format":"pcm","sample_rate":16000,'
            '"text_type":"PlainText","voice":"longhua_v2"},"task":"tts","task_group":"audio"}}'
        )
        assert finish == (
            '{"header":{"action":"finish-task","streaming":"duplex","task_id":"' + task_id + '"},'
            '"payload":{"input":{}}}'
        )


@pytest.mark.parametrize(
    ("cfg", "model", "voice"),
    [
        ({}, "cosyvoice-v2", "longwan_v2"),
        ({"version": "V1"}, "cosyvoice-v1", "longwan"),
        ({"version": "V1", "speaker": "longxiaochun"}, "cosyvoice-v1", "longxiaochun"),
    ],
)
def test_cosyvoice_versions_and_default_voices(cosy, cfg, model, voice):
    run(speak(cosy_speaker(cosy, cfg=cfg), "hi"))
    payload = json.loads(cosy.tasks[0])["payload"]
    assert (payload["model"], payload["parameters"]["voice"]) == (model, voice)


def test_cosyvoice_odd_sized_frames_and_resampling(cosy):
    cosy.chunk = 1001  # odd byte counts: each frame's last byte belongs to the next sample
    text = "x" * 40  # 0.8 s
    (at16,) = run(speak(cosy_speaker(cosy), text))
    np.testing.assert_array_equal(at16, expected(cosy, text))
    (at24,) = run(speak(cosy_speaker(cosy), text, rate=24000))
    assert json.loads(cosy.tasks[1])["payload"]["parameters"]["sample_rate"] == 16000
    np.testing.assert_array_equal(at24, audio.resample(expected(cosy, text), SR, 24000))
    assert len(at24) == round(0.8 * 24000)


@pytest.mark.parametrize(
    ("item", "kw", "notice"),
    [
        (VendorError("InvalidParameter", "voice not found"), {}, REPORTED),
        (Fail(cut_after=2), {}, CUT),
        (Fail(cut_after=10**6), {}, CUT),  # every frame, then closed before task-finished
        (Drop(), {}, CUT),  # before task-started, on a new connection: not retried
        (Fail(delay=60), {"read_timeout": 2.0}, TIMEOUT),
        (Raw("not json"), {}, BAD),
    ],
)
def test_cosyvoice_failures_are_notices_and_the_connection_is_not_reused(cosy, item, kw, notice):
    cosy.script.append(item)

    async def go():
        speaker = cosy_speaker(cosy, **kw)
        with pytest.raises(BackendError) as ei:
            await speak(speaker, "x" * 100)
        assert ei.value.notice == notice and ei.value.backend == "tts"
        return await speak(speaker, "again")

    (again,) = run(go())
    np.testing.assert_array_equal(again, expected(cosy, "again"))
    assert len(cosy.tasks) == 2 and cosy.connections == 2


@pytest.mark.parametrize("status", [401, 403])
def test_cosyvoice_refused_key(cosy, status):
    cosy.refuse = status
    with pytest.raises(BackendError) as ei:
        run(speak(cosy_speaker(cosy), "hi"))
    assert ei.value.notice == f"The speech synthesizer refused the API key (HTTP {status})."
    assert cosy.tasks == []


def test_cosyvoice_not_reachable():
    cfg = CosyVoiceTTS.model_validate({"token": "t", "url": f"ws://127.0.0.1:{free_port()}/"})
    with pytest.raises(BackendError) as ei:
        run(speak(CosyVoiceSpeaker(cfg), "hi"))
    assert ei.value.notice == "The speech synthesizer is not reachable."


def test_cosyvoice_a_kept_connection_the_service_dropped_is_replaced(cosy):
    cosy.script.extend([None, Drop()])  # the first task is answered; the next drops its socket
    first, second = run(speak(cosy_speaker(cosy), "one", "two"))
    np.testing.assert_array_equal(first, expected(cosy, "one"))
    np.testing.assert_array_equal(second, expected(cosy, "two"))
    # the second task went out on the kept connection, was lost, and ran again on a new one
    assert [json.loads(t)["payload"]["input"]["text"] for t in cosy.tasks] == ["one", "two", "two"]
    assert cosy.connections == 2 and cosy.completed == 2


def test_cosyvoice_cancelled_segment_closes_its_connection(cosy):
    cosy.chunk = 3200
    cosy.stream_delay = 30

    async def go():
        speaker = cosy_speaker(cosy)
        got = asyncio.Event()

        async def consume():
            async for _ in speaker.speak("x" * 200):
                got.set()

        task = asyncio.create_task(consume())
        await got.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(cosy.disconnected.wait, 10)
        cosy.stream_delay = 0
        return await speak(speaker, "again")

    (again,) = run(go())
    np.testing.assert_array_equal(again, expected(cosy, "again"))
    assert cosy.connections == 2 and cosy.completed == 1


# --------------------------------------------------------------------------------------------
# elevenlabs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "query"),
    [
        ({}, {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000"}),
        (
            {"model_id": "eleven_multilingual_v2", "language_code": "ZH"},
            {
                "model_id": "eleven_multilingual_v2",
                "output_format": "pcm_16000",
                "language_code": "zh",
            },
        ),
    ],
)
def test_elevenlabs_wire_is_the_references(eleven, cfg, query):
    text = "你好, this is a test."
    (pcm,) = run(speak(eleven_speaker(eleven, cfg=cfg), text))
    np.testing.assert_array_equal(pcm, expected(eleven, text))
    (hs,) = eleven.handshakes
    assert hs.path.split("?")[0] == "/v1/text-to-speech/V0ice/stream-input"
    assert list(hs.query.items()) == list(query.items())
    assert hs.headers["xi-api-key"] == "xi-1" and "authorization" not in hs.headers
    assert eleven.messages == [['{"flush":true,"text":"' + text + '"}', '{"text":""}']]


def test_elevenlabs_url_with_a_slash_and_resampling(eleven):
    cfg = {"url": f"ws://{eleven.addr}/v1/text-to-speech/"}
    text = "y" * 30
    (pcm,) = run(speak(eleven_speaker(eleven, cfg=cfg), text, rate=24000))
    assert eleven.handshakes[0].path.startswith("/v1/text-to-speech/V0ice/stream-input?")
    np.testing.assert_array_equal(pcm, audio.resample(expected(eleven, text), SR, 24000))


@pytest.mark.parametrize(
    ("item", "kw", "notice"),
    [
        (VendorError("input_timeout_exceeded", "no text"), {}, REPORTED),
        (Fail(cut_after=1), {}, CUT),
        (Fail(cut_after=10**6), {}, CUT),  # every piece, then dropped before isFinal
        (Fail(delay=60), {"read_timeout": 2.0}, TIMEOUT),
        (Raw('{"audio": "%%% not base64 %%%"}'), {}, BAD),
        (Raw("[1, 2]"), {}, BAD),
    ],
)
def test_elevenlabs_failures_are_notices(eleven, item, kw, notice):
    eleven.script.append(item)

    async def go():
        speaker = eleven_speaker(eleven, **kw)
        with pytest.raises(BackendError) as ei:
            await speak(speaker, "x" * 100)
        assert ei.value.notice == notice and ei.value.backend == "tts"
        return await speak(speaker, "again")

    (again,) = run(go())
    np.testing.assert_array_equal(again, expected(eleven, "again"))


@pytest.mark.parametrize("status", [401, 403])
def test_elevenlabs_refused_key(eleven, status):
    eleven.refuse = status
    with pytest.raises(BackendError) as ei:
        run(speak(eleven_speaker(eleven), "hi"))
    assert ei.value.notice == f"The speech synthesizer refused the API key (HTTP {status})."


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "extra", "default"),
    [
        ("cosyvoice", "", "wss://dashscope.aliyuncs.com/api-ws/v1/inference"),
        ("elevenlabs", 'voice = "v"\n', "wss://api.elevenlabs.io/v1/text-to-speech"),
    ],
)
def test_url_is_validated(platform, extra, default):
    def tts(url: str) -> Any:
        text = (
            f'addr = "127.0.0.1:0"\n[tts]\nplatform = "{platform}"\ntoken = "t"\n{extra}'
            f'url = "{url}"\n'
            '[asr]\nplatform = "openai"\nurl = "http://a/v1/audio/transcriptions"\n'
            '[llm]\nplatform = "openai_chat"\nurl = "http://l/v1/chat/completions"\nhistory = 1\n'
        )
        return parse_config(text, env={}, log_issues=False).config.tts

    assert tts("").url == default  # empty: the default, as in the reference
    assert tts("https://h/x").url == "wss://h/x" and tts("http://h/x").url == "ws://h/x"
    assert tts("WSS://h/x").url == "wss://h/x"
    with pytest.raises(ConfigError) as ei:
        tts("ftp://h/x")
    (issue,) = ei.value.issues
    assert issue.path == "tts.url" and "expected a WebSocket URL (ws://, wss://" in issue.message


@pytest.mark.parametrize(
    "fixture", ["examples/tts/cosyvoice/config.toml", "examples/alibailian/config.toml"]
)
def test_reference_example_configs_pass_check_config(fixture):
    """The reference's cosyvoice examples pass ``check-config``. alibailian also needs the
    ``paraformer_v2`` ASR: while that is not served, the [asr] one is its only problem."""
    path = DATA / "configs" / fixture
    out = subprocess.run(
        [sys.executable, "-m", "echokit_fast", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    if "alibailian" in fixture and not registry.get("asr", "paraformer_v2").runnable:
        assert out.returncode == 1 and len(errors) == 1, out.stderr
        assert errors[0].startswith("error: [asr] platform 'paraformer_v2' is not supported")
    else:
        assert out.returncode == 0 and not errors, out.stderr
        assert "tts:    cosyvoice  wss://dashscope.aliyuncs.com/api-ws/v1/inference" in out.stdout


# --------------------------------------------------------------------------------------------
# device turns through the server
# --------------------------------------------------------------------------------------------

STANDINS = {"cosyvoice": CosyVoiceServer, "elevenlabs": ElevenLabsServer}


def decoded_segments(events: list[Any]) -> list[tuple[str, int]]:
    """``(text, decoded samples)`` of each StartAudio..EndAudio group."""
    out: list[tuple[str, int]] = []
    dec = OpusDecoder(SR)
    for ev in events:
        n = name(ev)
        if n == "StartAudio":
            dec.reset()
            out.append((ev["StartAudio"]["text"], 0))
        elif n == "AudioChunkWithVowel":
            text, count = out[-1]
            out[-1] = (text, count + len(dec.decode(ev["AudioChunkWithVowel"]["data"])))
    return out


def padded(server: Any, text: str) -> int:
    """Samples the device decodes for ``text``: all of it, zero-padded to 120 ms packets."""
    n = round(server.duration(text) * SR)
    return -(-n // 1920) * 1920


@pytest.mark.parametrize("platform", ["cosyvoice", "elevenlabs"])
def test_device_turn_speaks_the_service_audio(serve, tmp_path, platform):
    """A config naming the platform is served: a typed turn's reply (LLM stand-in) is spoken
    with the TTS stand-in's audio, every sample of it."""
    chat = ChatServer()
    chat.reply(["It is sunny in Paris. ", "Take your sunglasses!"])
    tts = STANDINS[platform]()
    with running_ws_server(tts) as tts_addr:
        voice = 'voice = "V0ice"\n' if platform == "elevenlabs" else ""
        path = "/api-ws/v1/inference" if platform == "cosyvoice" else "/v1/text-to-speech"
        text = (
            f'addr = "127.0.0.1:0"\n[tts]\nplatform = "{platform}"\ntoken = "sk-1"\n{voice}'
            f'url = "ws://{tts_addr}{path}"\n'
            '[asr]\nplatform = "openai"\nurl = "http://127.0.0.1:9/v1/audio/transcriptions"\n'
            f'[llm]\nplatform = "openai_chat"\nurl = "http://{serve(chat.app)}/v1/chat/completions"\n'
            "history = 1\n"
        )
        ctx = AppState(parse_config(text, env={}, log_issues=False).config)
        ctx.record_dir = tmp_path / "record"
        addr = serve(create_app(state=ctx))

        async def turn() -> list[Any]:
            dev = await Device.open(addr, "a0b1c2d3e4f5", opus=True, vowel=True)
            await dev.command("Text", input="Weather in Paris?")
            events = await dev.until("EndResponse")
            await dev.close()
            return events

        events = run(turn())
    segs = decoded_segments(events)
    assert [t for t, _ in segs] == ["It is sunny in Paris.", "Take your sunglasses!"]
    assert [n for _, n in segs] == [padded(tts, t) for t, _ in segs]
    assert "DisplayText" not in [name(e) for e in events] and name(events[-1]) == "EndResponse"
    assert tts.completed == 2


def _script(text: str) -> list[str]:
    return ["All good."] if text == "again" else ["First sentence. Second one."]


FAILURES = [
    (VendorError(), {}, REPORTED),
    (Fail(cut_after=1), {}, CUT),
    (Fail(delay=60), {"read_timeout": 2.0}, TIMEOUT),
    ("refuse", {}, "The speech synthesizer refused the API key (HTTP 401)."),
]


@pytest.mark.parametrize("platform", ["cosyvoice", "elevenlabs"])
@pytest.mark.parametrize(("item", "kw", "notice"), FAILURES, ids=["error", "cut", "slow", "auth"])
def test_device_turn_failure_is_a_notice_and_the_server_goes_on(
    serve, tmp_path, platform, item, kw, notice
):
    tts = STANDINS[platform]()
    with running_ws_server(tts) as tts_addr:
        tts.addr = tts_addr
        speaker = (cosy_speaker if platform == "cosyvoice" else eleven_speaker)(tts, **kw)
        ctx = AppState(default_config())
        ctx.backends = Backends(FakeTranscriber(), speaker, Conversations(_script))
        ctx.record_dir = tmp_path / "record"
        ctx.segmenter = SentenceSegmenter
        addr = serve(create_app(state=ctx))
        if item == "refuse":
            tts.refuse = 401
        else:
            tts.script.append(item)

        async def turns() -> tuple[list[Any], list[Any]]:
            dev = await Device.open(addr, "dev1", opus=True, vowel=True)
            await dev.command("Text", input="hello")
            failed = await dev.until("EndResponse")
            tts.refuse = None
            await dev.command("Text", input="again")
            again = await dev.until("EndResponse")
            await dev.close()
            return failed, again

        failed, again = run(turns())
    names = [name(e) for e in failed]
    assert names.count("EndResponse") == 1 and names[-1] == "EndResponse"
    i = names.index("DisplayText")
    assert failed[i] == {"DisplayText": {"text": notice}}
    # the notice is shown (StartAudio carries it) but not spoken: the TTS is what failed
    assert decoded_segments(failed[i + 1 :]) == [(notice, 0)]
    assert decoded_segments(failed[:i])[0][0] == "First sentence."
    assert decoded_segments(again) == [("All good.", padded(tts, "All good."))]


def test_both_platforms_are_served():
    assert registry.get("tts", "cosyvoice").runnable
    assert registry.get("tts", "elevenlabs").runnable

"""Remote ASR and TTS clients over real loopback HTTP against the stand-in servers."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack
import numpy as np
import pytest
from harness import free_port
from standins import tone

from echokit_fast.audio import float_to_pcm16, pcm16_to_float, write_wav
from echokit_fast.backends.asr.openai import OpenAIASR, RemoteTranscriber, clean_transcript
from echokit_fast.backends.base import BackendError, Speaker, Transcriber
from echokit_fast.backends.llm.openai_chat import OpenAIChat
from echokit_fast.backends.registry import build_backends
from echokit_fast.backends.tts.fish import FishSpeaker, FishTTS
from echokit_fast.backends.tts.gsv import GSVTTS, GSVSpeaker
from echokit_fast.backends.tts.openai import GroqTTS, OpenAISpeaker, OpenAITTS
from echokit_fast.backends.tts.stream_gsv import StreamGSVSpeaker, StreamGSVTTS
from echokit_fast.config import parse_config


def run(coro):
    return asyncio.run(coro)


def asr_cfg(addr: str, **kw: Any) -> OpenAIASR:
    return OpenAIASR.model_validate({"url": f"http://{addr}/v1/audio/transcriptions", **kw})


async def transcribe(cfg: OpenAIASR, x: np.ndarray, **kw: Any) -> str:
    tr = RemoteTranscriber(cfg, **kw)
    try:
        return await tr.transcribe(x)
    finally:
        await tr.aclose()


SPEECH = tone(0.5, 16000, 300.0)


# --- ASR request --------------------------------------------------------------------------


def test_asr_multipart_fields_in_order_with_key(asr):
    cfg = asr_cfg(asr.addr, api_key="k1", lang="en", model="whisper-1", prompt="hi")
    assert run(transcribe(cfg, SPEECH)) == "hello world"
    req = asr.requests[0]
    assert [(n, f) for n, f, _ in req.parts] == [
        ("file", "audio.wav"),
        ("language", None),
        ("model", None),
        ("prompt", None),
    ]
    assert [v for _, _, v in req.parts[1:]] == ["en", "whisper-1", "hi"]
    assert req.headers["authorization"] == "Bearer k1"
    assert req.headers["user-agent"] == "curl/7.81.0"
    assert "response_format" not in [n for n, _, _ in req.parts]
    wav = req.part("file")
    pcm = float_to_pcm16(SPEECH)
    # canonical 44-byte header, written out field by field
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", len(pcm))
    )
    assert wav == header + pcm


def test_asr_without_key_or_options_sends_only_the_file(asr):
    assert run(transcribe(asr_cfg(asr.addr), SPEECH)) == "hello world"
    req = asr.requests[0]
    assert [n for n, _, _ in req.parts] == ["file"]
    assert "authorization" not in req.headers
    assert req.headers["user-agent"] != "curl/7.81.0"


def test_asr_other_sample_rates_are_resampled_to_16k(asr):
    async def go():
        tr = RemoteTranscriber(asr_cfg(asr.addr))
        await tr.transcribe(tone(0.5, 8000), sample_rate=8000)
        await tr.aclose()

    run(go())
    wav = asr.requests[0].part("file")
    assert struct.unpack("<I", wav[24:28])[0] == 16000
    assert struct.unpack("<I", wav[40:44])[0] == 2 * 8000  # 0.5 s at 16 kHz


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ("[00:00.000 --> 00:02.000] Hello\n[00:02.000 --> 00:03.000] there", "Hello\nthere"),
        ("  (music)  ", ""),
        ("", ""),
        ({"error": "no text key"}, ""),
        (" 軟體和滑鼠 ", "软件和鼠标"),
        ("a] b] c", "b] c"),
    ],
)
def test_asr_post_processing(asr, answer, text):
    asr.answer(answer)
    assert run(transcribe(asr_cfg(asr.addr), SPEECH)) == text


def test_clean_transcript_keeps_non_chinese_text():
    assert clean_transcript("Straße, café") == "Straße, café"


# --- ASR failures -----------------------------------------------------------------------------


def test_asr_5xx_is_retried_and_then_succeeds(asr):
    asr.fail(500)
    asr.fail(503)
    assert run(transcribe(asr_cfg(asr.addr), SPEECH)) == "hello world"
    assert len(asr.requests) == 3


def test_asr_5xx_every_time_is_an_error_after_three_attempts(asr):
    for _ in range(3):
        asr.fail(502)
    with pytest.raises(BackendError) as ei:
        run(transcribe(asr_cfg(asr.addr), SPEECH))
    assert len(asr.requests) == 3
    assert ei.value.notice == "The speech recognizer failed (HTTP 502)."
    assert ei.value.backend == "asr"
    assert "502" in str(ei.value)


@pytest.mark.parametrize("status", [400, 401, 404])
def test_asr_4xx_is_not_retried(asr, status):
    asr.fail(status)
    with pytest.raises(BackendError) as ei:
        run(transcribe(asr_cfg(asr.addr), SPEECH))
    assert len(asr.requests) == 1
    assert f"HTTP {status}" in ei.value.notice


def test_asr_timeouts_are_retried_three_times(asr):
    for _ in range(3):
        asr.fail(hang=True)
    with pytest.raises(BackendError) as ei:
        run(transcribe(asr_cfg(asr.addr), SPEECH, attempt_timeout=0.3))
    assert ei.value.notice == "The speech recognizer did not answer in time."
    assert len(asr.requests) == 3


def test_asr_bad_json_is_retried(asr):
    asr.fail(200, body="not json")
    assert run(transcribe(asr_cfg(asr.addr), SPEECH)) == "hello world"
    assert len(asr.requests) == 2


def test_asr_connection_refused():
    cfg = OpenAIASR.model_validate({"url": f"http://127.0.0.1:{free_port()}/v1/x"})
    with pytest.raises(BackendError) as ei:
        run(transcribe(cfg, SPEECH))
    assert ei.value.notice == "The speech recognizer is not reachable."


def test_asr_speculative_start_and_cancel(asr):
    async def go():
        tr = RemoteTranscriber(asr_cfg(asr.addr))
        job = tr.start(SPEECH)
        first = await job.result()
        asr.fail(hang=True)
        asr.received.clear()
        job2 = tr.start(SPEECH)
        assert await asyncio.to_thread(asr.received.wait, 10)  # the request is in
        job2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job2.result()
        saw = await asyncio.to_thread(asr.disconnected.wait, 10)
        await tr.aclose()
        return first, saw

    first, saw = run(go())
    assert first == "hello world"
    assert saw


# --- TTS --------------------------------------------------------------------------------------


async def speak_all(speaker, text: str, rate: int = 16000) -> list[np.ndarray]:
    try:
        return [c async for c in speaker.speak(text, sample_rate=rate)]
    finally:
        await speaker.aclose()


def test_stream_gsv_request_and_rechunked_pcm(tts):
    tts.stream_chunk = 3000  # pieces not aligned with the 16000-byte output chunks
    cfg = StreamGSVTTS.model_validate(
        {"url": f"http://{tts.addr}/v1/audio/stream_speech", "speaker": "cooper"}
    )
    text = "Hello there, how are you today?"  # 31 chars -> 0.62 s
    chunks = run(speak_all(StreamGSVSpeaker(cfg), text))
    req = tts.requests[0]
    assert req.json == {"speaker": "cooper", "input": text, "sample_rate": 16000}
    assert list(req.json) == ["speaker", "input", "sample_rate"]
    expected = pcm16_to_float(float_to_pcm16(tone(tts.duration(text), 16000)))
    assert [len(c) for c in chunks] == [8000, len(expected) - 8000]
    assert all(c.dtype == np.float32 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), expected)


def test_stream_gsv_resampled_to_the_asked_rate(tts):
    cfg = StreamGSVTTS.model_validate(
        {"url": f"http://{tts.addr}/v1/audio/stream_speech", "speaker": "a"}
    )
    text = "x" * 50  # 1.0 s
    chunks = run(speak_all(StreamGSVSpeaker(cfg), text, rate=24000))
    assert sum(len(c) for c in chunks) == 24000


@pytest.mark.parametrize(
    ("fail", "notice"),
    [
        ({"status": 500}, "The speech synthesizer failed (HTTP 500)."),
        ({"status": 400}, "The speech synthesizer rejected the request (HTTP 400)."),
        ({"cut_after": 5000}, "The speech synthesizer's audio was cut off."),
    ],
)
def test_stream_gsv_failures(tts, fail, notice):
    tts.fail(**fail)
    cfg = StreamGSVTTS.model_validate(
        {"url": f"http://{tts.addr}/v1/audio/stream_speech", "speaker": "a"}
    )
    with pytest.raises(BackendError) as ei:
        run(speak_all(StreamGSVSpeaker(cfg), "x" * 100))
    assert ei.value.notice == notice
    assert ei.value.backend == "tts"


def test_stream_gsv_cancel_mid_stream_closes_the_connection(tts):
    tts.stream_chunk = 16000
    tts.stream_delay = 30
    cfg = StreamGSVTTS.model_validate(
        {"url": f"http://{tts.addr}/v1/audio/stream_speech", "speaker": "a"}
    )

    async def go():
        sp = StreamGSVSpeaker(cfg)
        got = asyncio.Event()

        async def consume():
            async for _ in sp.speak("x" * 200):
                got.set()

        task = asyncio.create_task(consume())
        await got.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        saw = await asyncio.to_thread(tts.disconnected.wait, 10)
        await sp.aclose()
        return saw

    assert run(go())
    assert tts.completed == 0


CONCURRENT = 150  # more than httpx's default pool of 100 connections


async def _all_in_flight(server, start_one) -> int:
    """Start CONCURRENT requests that the stand-in never answers; how many it has received
    once that stops growing (every one, unless a client pool holds some back)."""
    for _ in range(CONCURRENT):
        server.fail(hang=True)
    tasks = [asyncio.create_task(start_one()) for _ in range(CONCURRENT)]
    try:
        while len(server.requests) < CONCURRENT:
            server.received.clear()
            if len(server.requests) >= CONCURRENT:
                break
            if not await asyncio.to_thread(server.received.wait, 5):
                break  # no new request for 5 s: the rest are queued in the client
        return len(server.requests)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_asr_requests_of_many_devices_are_not_held_back_by_the_pool(asr):
    async def go():
        tr = RemoteTranscriber(asr_cfg(asr.addr))
        try:
            return await _all_in_flight(asr, lambda: tr.transcribe(SPEECH))
        finally:
            await tr.aclose()

    assert run(go()) == CONCURRENT


def test_tts_streams_of_many_devices_are_not_held_back_by_the_pool(tts):
    cfg = StreamGSVTTS.model_validate(
        {"url": f"http://{tts.addr}/v1/audio/stream_speech", "speaker": "a"}
    )

    async def go():
        sp = StreamGSVSpeaker(cfg)

        async def one():
            async for _ in sp.speak("hello"):
                pass

        try:
            return await _all_in_flight(tts, one)
        finally:
            await sp.aclose()

    assert run(go()) == CONCURRENT


def test_tts_connection_refused():
    cfg = StreamGSVTTS.model_validate({"url": f"http://127.0.0.1:{free_port()}/s", "speaker": "a"})
    with pytest.raises(BackendError) as ei:
        run(speak_all(StreamGSVSpeaker(cfg), "hi"))
    assert ei.value.notice == "The speech synthesizer is not reachable."


def test_gsv_wav_reply_in_half_second_chunks(tts):
    cfg = GSVTTS.model_validate({"url": f"http://{tts.addr}/gsv", "speaker": "s1"})
    text = "y" * 60  # 1.2 s
    chunks = run(speak_all(GSVSpeaker(cfg), text))
    assert tts.requests[0].json == {"speaker": "s1", "input": text, "sample_rate": 16000}
    assert [len(c) for c in chunks] == [8000, 8000, 3200]
    expected = pcm16_to_float(float_to_pcm16(tone(1.2, 16000)))
    np.testing.assert_array_equal(np.concatenate(chunks), expected)


def test_gsv_retries_timeouts_only(tts):
    tts.fail(hang=True)
    cfg = GSVTTS.model_validate(
        {"url": f"http://{tts.addr}/gsv", "speaker": "s1", "timeout_sec": 1}
    )
    chunks = run(speak_all(GSVSpeaker(cfg), "z" * 10))
    assert len(tts.requests) == 2
    assert sum(len(c) for c in chunks) == 3200
    tts.requests.clear()
    tts.fail(500)
    with pytest.raises(BackendError) as ei:
        run(speak_all(GSVSpeaker(cfg), "z"))
    assert len(tts.requests) == 1
    assert "HTTP 500" in ei.value.notice


def test_openai_tts_request_and_resampling(tts):
    cfg = OpenAITTS.model_validate(
        {"url": f"http://{tts.addr}/v1/audio/speech", "api_key": "sk-1", "voice": "nova"}
    )
    text = "q" * 75  # 1.5 s at the server's 24 kHz
    chunks = run(speak_all(OpenAISpeaker(cfg), text))
    req = tts.requests[0]
    assert req.json == {
        "model": "gpt-4o-mini-tts",
        "voice": "nova",
        "input": text,
        "response_format": "wav",
    }
    assert req.headers["authorization"] == "Bearer sk-1"
    assert [len(c) for c in chunks] == [8000, 8000, 8000]


def test_groq_tts_uses_its_model_and_voice(tts):
    cfg = GroqTTS.model_validate(
        {"url": f"http://{tts.addr}/v1/audio/speech", "api_key": "g", "voice": "Fritz-PlayAI"}
    )
    run(speak_all(OpenAISpeaker(cfg), "hi"))
    assert tts.requests[0].json["model"] == "playai-tts"
    assert tts.requests[0].json["voice"] == "Fritz-PlayAI"


def test_openai_tts_401_and_bad_wav(tts):
    cfg = OpenAITTS.model_validate({"url": f"http://{tts.addr}/v1/audio/speech", "api_key": "x"})
    tts.fail(401)
    with pytest.raises(BackendError) as ei:
        run(speak_all(OpenAISpeaker(cfg), "hi"))
    assert ei.value.notice == "The speech synthesizer refused the API key (HTTP 401)."
    tts.fail(delay=0.0, status=200, body=b"not a wav")
    with pytest.raises(BackendError) as ei:
        run(speak_all(OpenAISpeaker(cfg), "hi"))
    assert "cannot be played" in ei.value.notice


def test_fish_msgpack_request(tts):
    cfg = FishTTS.model_validate(
        {"url": f"http://{tts.addr}/v1/tts", "api_key": "f1", "speaker": "ref-1"}
    )
    chunks = run(speak_all(FishSpeaker(cfg), "w" * 25, rate=24000))  # 0.5 s, no resampling
    req = tts.requests[0]
    assert msgpack.unpackb(req.body) == {
        "text": "w" * 25,
        "chunk_length": 200,
        "format": "wav",
        "mp3_bitrate": 128,
        "reference_id": "ref-1",
        "normalize": True,
        "latency": "normal",
    }
    assert req.headers["content-type"] == "application/msgpack"
    assert req.headers["model"] == "s1"
    assert req.headers["authorization"] == "Bearer f1"
    np.testing.assert_array_equal(
        np.concatenate(chunks), pcm16_to_float(float_to_pcm16(tone(0.5, 24000)))
    )


# --- factory ----------------------------------------------------------------------------------


def test_build_backends_for_the_gaia_like_remote_pipeline(asr, tts, serve):
    text = f"""
addr = "0.0.0.0:9090"
[tts]
platform = "StreamGSV"
url = "http://{tts.addr}/v1/audio/stream_speech"
speaker = "cooper"
[asr]
platform = "whisper"
url = "http://{asr.addr}/v1/audio/transcriptions"
lang = "auto"
[llm]
platform = "openai_chat"
url = "http://127.0.0.1:9/v1/chat/completions"
history = 5
"""
    config = parse_config(text, log_issues=False).config

    async def go():
        backends = build_backends(config)
        transcriber, speaker, factory = backends
        assert isinstance(transcriber, Transcriber) and isinstance(transcriber, RemoteTranscriber)
        assert isinstance(speaker, Speaker) and isinstance(speaker, StreamGSVSpeaker)
        conv = factory()
        assert isinstance(conv, OpenAIChat)
        text_out = await transcriber.transcribe(SPEECH)
        audio = [c async for c in speaker.speak("hello")]
        await backends.aclose()
        return text_out, audio

    text_out, audio = run(go())
    assert text_out == "hello world"
    assert asr.requests[0].part("language") == "auto"
    assert sum(len(c) for c in audio) == round(tts.duration("hello") * 16000)


def test_write_wav_is_the_canonical_header():
    # the ASR relies on write_wav producing the 44-byte header (checked byte by byte above)
    assert len(write_wav(np.zeros(10, np.float32), 16000)) == 44 + 20

"""Remote clients refused with HTTP 429: one backoff (echokit_fast/backends/http.py) that
honours Retry-After, through real loopback HTTP against stand-ins that answer 429."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from standins import tone

from echokit_fast.backends import http
from echokit_fast.backends.asr.openai import OpenAIASR, RemoteTranscriber
from echokit_fast.backends.base import BackendError
from echokit_fast.backends.tts.openai import OpenAISpeaker, OpenAITTS
from echokit_fast.backends.tts.stream_gsv import StreamGSVSpeaker, StreamGSVTTS

SPEECH = tone(0.5, 16000, 300.0)
BUSY = {"Retry-After": "1"}


async def _transcribe(addr: str) -> str:
    cfg = OpenAIASR.model_validate({"url": f"http://{addr}/v1/audio/transcriptions"})
    client = RemoteTranscriber(cfg)  # retry_delay 0: other failures are retried at once
    try:
        return await client.transcribe(SPEECH)
    finally:
        await client.aclose()


async def _speak(speaker) -> int:
    try:
        return sum([len(c) async for c in speaker.speak("hello", sample_rate=16000)])
    finally:
        await speaker.aclose()


def test_asr_waits_for_retry_after_then_succeeds(asr) -> None:
    asr.fail(429, headers=BUSY)
    t0 = time.monotonic()
    assert asyncio.run(_transcribe(asr.addr)) == "hello world"
    assert time.monotonic() - t0 >= 1.0  # not retried at once
    assert len(asr.requests) == 2


def test_asr_gives_up_when_retry_after_is_too_long(asr) -> None:
    asr.fail(429, headers={"Retry-After": "3600"})
    with pytest.raises(BackendError) as info:
        asyncio.run(_transcribe(asr.addr))
    assert len(asr.requests) == 1  # the turn does not wait an hour
    assert "429" in info.value.notice and "1 attempt(s)" in str(info.value)
    assert "Retry-After 3600 s is too long" in str(info.value)


def test_asr_backs_off_without_retry_after(asr) -> None:
    asr.fail(429)
    asr.fail(429)
    assert asyncio.run(_transcribe(asr.addr)) == "hello world"
    assert len(asr.requests) == 3


def test_openai_tts_waits_for_retry_after(tts) -> None:
    tts.fail(429, headers=BUSY)
    url = f"http://{tts.addr}/v1/audio/speech"
    cfg = OpenAITTS.model_validate({"url": url, "voice": "a", "api_key": "k"})
    t0 = time.monotonic()
    assert asyncio.run(_speak(OpenAISpeaker(cfg))) > 0
    assert time.monotonic() - t0 >= 1.0
    assert len(tts.requests) == 2


def test_streaming_tts_retries_a_429_and_stops_after_its_attempts(tts) -> None:
    cfg = StreamGSVTTS.model_validate(
        {"url": f"http://{tts.addr}/v1/audio/stream_speech", "speaker": "a"}
    )
    tts.fail(429, headers={"Retry-After": "0"})
    assert asyncio.run(_speak(StreamGSVSpeaker(cfg))) > 0
    assert len(tts.requests) == 2
    for _ in range(3):
        tts.fail(429, headers={"Retry-After": "0"})
    with pytest.raises(BackendError) as info:
        asyncio.run(_speak(StreamGSVSpeaker(cfg)))
    assert "429" in str(info.value) and len(tts.requests) == 2 + 3


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    for attempt in (1, 2, 3, 10):
        waits = [http.backoff(attempt, None, base=0.5) for _ in range(200)]
        step = min(http.MAX_RETRY_WAIT_S, 0.5 * 2 ** (attempt - 1))
        assert all(0 <= w <= step for w in waits)
        assert len(set(waits)) > 100  # jittered: clients refused together spread out
    assert 2.0 <= http.backoff(1, 2.0) <= 2.2
    assert http.backoff(1, http.MAX_RETRY_WAIT_S + 1) is None
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < http.retry_after(httpx.Headers({"Retry-After": soon})) <= 30
    assert http.retry_after(httpx.Headers({"Retry-After": "2"})) == 2.0
    assert http.retry_after(httpx.Headers({})) is None
    assert http.retry_after(httpx.Headers({"Retry-After": "soon"})) is None

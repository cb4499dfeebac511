"""backends/http.py: the words each backend uses for a failed request, and the retry policy."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from harness import running_server

from echokit_fast.backends import http
from echokit_fast.backends.asr.openai import NOTICES as ASR
from echokit_fast.backends.llm.errors import NOTICES as LLM
from echokit_fast.backends.tts.speaker import NOTICES as TTS


@pytest.mark.parametrize(
    "notices, status, notice",
    [
        (ASR, 401, "The speech recognizer refused the API key (HTTP 401)."),
        (ASR, 404, "The speech recognizer rejected the request (HTTP 404)."),
        (ASR, 503, "The speech recognizer failed (HTTP 503)."),
        (TTS, 403, "The speech synthesizer refused the API key (HTTP 403)."),
        (TTS, 429, "The speech synthesizer rejected the request (HTTP 429)."),
        (TTS, 500, "The speech synthesizer failed (HTTP 500)."),
        (LLM, 429, "The language model is busy (HTTP 429). Please try again shortly."),
        (LLM, 408, "The language model rejected the request (HTTP 408)."),
        (LLM, 502, "The language model failed (HTTP 502)."),
    ],
)
def test_status_notices(notices, status, notice):
    assert notices.status(status) == notice


def test_exception_notices():
    request = httpx.Request("GET", "http://x")
    cut = httpx.ReadError("reset", request=request)
    assert TTS.exception(httpx.ReadTimeout("t", request=request)) == (
        "The speech synthesizer did not answer in time."
    )
    assert TTS.exception(cut) == "The speech synthesizer's audio was cut off."
    assert ASR.exception(cut) == "The speech recognizer is not reachable."  # no "cut" for ASR
    assert ASR.exception(httpx.ConnectError("no", request=request)) == (
        "The speech recognizer is not reachable."
    )
    err = ASR.error("detail", ASR.bad_answer)
    assert (str(err), err.notice, err.backend) == (
        "detail",
        "The speech recognizer sent a bad answer.",
        "asr",
    )


def test_retry_policy_and_client_limits():
    assert [s for s in (400, 401, 404, 408, 429, 500, 503) if http.retryable(s)] == [
        408,
        429,
        500,
        503,
    ]
    client = http.client(httpx.Timeout(60.0, connect=10.0))
    try:
        assert client.timeout == httpx.Timeout(60.0, connect=10.0)
        # the limits reach the connection pools, shared among them (rounded up)
        pools = [t._pool for t in client._transport.pools]
        assert len(pools) == http.POOLS == 8
        assert {(p._max_connections, p._max_keepalive_connections) for p in pools} == {(125, 13)}
    finally:
        asyncio.run(client.aclose())
    with pytest.raises(ValueError, match="pools"):
        http.ShardedTransport(0)


def test_a_light_load_stays_on_one_pool_and_a_heavy_one_is_spread():
    """Requests one at a time take the first pool and reuse its connection; requests held at
    once take one pool each (what keeps each pool's walk over its connections short); each
    closed response counts its request out."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def go(base: str) -> tuple[list[int], list[int], list[int], list[int]]:
        client = http.client(10.0)
        transport = client._transport

        def connections() -> list[int]:
            return [len(t._pool.connections) for t in transport.pools]

        try:
            for _ in range(3):
                async with client.stream("GET", base) as resp:
                    assert (resp.status_code, await resp.aread()) == (200, b"ok")
            one_at_a_time = connections()
            async with contextlib.AsyncExitStack() as held:
                for _ in range(http.POOLS):
                    await held.enter_async_context(client.stream("GET", base))
                at_once, busy = connections(), list(transport.busy)
            return one_at_a_time, at_once, busy, list(transport.busy)
        finally:
            await client.aclose()

    with running_server(app) as addr:
        one_at_a_time, at_once, busy, after = asyncio.run(go(f"http://{addr}/"))
    assert one_at_a_time == [1] + [0] * (http.POOLS - 1)
    assert at_once == [1] * http.POOLS and busy == [1] * http.POOLS
    assert after == [0] * http.POOLS

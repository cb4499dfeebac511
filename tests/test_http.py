"""backends/http.py: the words each backend uses for a failed request, and the retry policy."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket

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

    async def go() -> tuple[int, float]:
        client = http.client(httpx.Timeout(60.0, connect=10.0))
        try:
            assert client.timeout == httpx.Timeout(60.0, connect=10.0)
            connector = client._transport._client().connector
            return connector.limit, connector._keepalive_timeout
        finally:
            await client.aclose()

    # the limits reach aiohttp's connector
    assert (
        asyncio.run(go())
        == (http.LIMITS.max_connections, http.LIMITS.keepalive_expiry)
        == (
            1000,
            5.0,
        )
    )


def test_requests_one_at_a_time_share_a_connection_and_held_ones_take_one_each():
    """The transport keeps a connection alive for the next request (one client port seen by
    the server for three requests in turn) and opens one per response still streaming."""
    ports: list[int] = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        ports.append(scope["client"][1])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        held = scope["path"] == "/held"
        await send({"type": "http.response.body", "body": b"ok", "more_body": held})
        if held:  # the body goes on until the client hangs up
            while (await receive())["type"] != "http.disconnect":
                pass

    async def go(base: str) -> tuple[int, int]:
        client = http.client(10.0)
        try:
            for _ in range(3):
                async with client.stream("GET", base) as resp:
                    assert (resp.status_code, await resp.aread()) == (200, b"ok")
            in_turn = len(set(ports))
            ports.clear()
            async with contextlib.AsyncExitStack() as held:
                for _ in range(4):
                    await held.enter_async_context(client.stream("GET", base + "held"))
            return in_turn, len(set(ports))
        finally:
            await client.aclose()

    with running_server(app) as addr:
        assert asyncio.run(go(f"http://{addr}/")) == (1, 4)


def test_a_post_reaches_the_server_whole_with_its_headers():
    seen: dict = {}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        seen.update(method=scope["method"], headers=dict(scope["headers"]), body=body)
        # a gzip answer: httpx decodes it (aiohttp hands the bytes over as they came)
        headers = [(b"x-a", b"1"), (b"content-encoding", b"gzip")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": gzip.compress(b'{"ok": true}')})

    async def go(base: str) -> httpx.Response:
        client = http.client(10.0)
        try:
            return await client.post(
                base + "/up",
                files={"file": ("a.wav", b"RIFF" + b"\0" * 5000, "audio/wav")},
                data={"model": "whisper"},
                headers={"Authorization": "Bearer k"},
            )
        finally:
            await client.aclose()

    with running_server(app) as addr:
        resp = asyncio.run(go(f"http://{addr}"))
    assert (resp.status_code, resp.json(), resp.headers["x-a"]) == (201, {"ok": True}, "1")
    assert seen["method"] == "POST" and seen["headers"][b"authorization"] == b"Bearer k"
    assert seen["headers"][b"content-type"].startswith(b"multipart/form-data; boundary=")
    assert int(seen["headers"][b"content-length"]) == len(seen["body"])
    assert b'name="model"\r\n\r\nwhisper' in seen["body"] and b"RIFF" + b"\0" * 5000 in seen["body"]


async def _raw_server(reply: bytes, *, stall: bool) -> tuple[asyncio.Server, str]:
    """A loopback server that reads a request's head, writes ``reply`` and then hangs up, or
    (``stall``) holds the connection open without another byte."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if stall:
            held.append(writer)
        else:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


def test_each_transport_failure_is_the_httpx_exception_its_notice_reads():
    """Refused, hung up before an answer, cut inside a stream, silent past the read timeout,
    no connection free within the pool timeout: each becomes the httpx exception httpcore
    raises, so the notices say "not reachable", "cut off" or "did not answer in time"."""

    async def failure(url: str, *, read: bool = True, timeout: float = 10.0) -> BaseException:
        client = http.client(timeout)
        try:
            async with client.stream("GET", url) as resp:
                if read:
                    await resp.aread()
        except httpx.HTTPError as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("no failure")

    async def go() -> dict[str, BaseException]:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{s.getsockname()[1]}/"
        out = {"refused": await failure(refused)}
        cut = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nonly"
        for name, reply, stall in (
            ("hung up", b"", False),
            ("cut", cut, False),
            ("silent", b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", True),
        ):
            server, url = await _raw_server(reply, stall=stall)
            async with server:
                out[name] = await failure(url, timeout=0.3)
        # one connection in all, held by a response left open: the next request finds none
        server, url = await _raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", stall=True)
        async with server:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, pool=0.3),
                transport=http.AiohttpTransport(httpx.Limits(max_connections=1)),
            )
            try:
                async with client.stream("GET", url):
                    out["no free connection"] = await client.get(url)
            except httpx.HTTPError as exc:
                out["no free connection"] = exc
            finally:
                await client.aclose()
        return out

    failures = asyncio.run(go())
    kinds = {name: type(exc) for name, exc in failures.items()}
    assert kinds == {
        "refused": httpx.ConnectError,
        "hung up": httpx.RemoteProtocolError,
        "cut": httpx.RemoteProtocolError,
        "silent": httpx.ReadTimeout,
        "no free connection": httpx.ConnectTimeout,
    }
    assert ASR.exception(failures["refused"]) == "The speech recognizer is not reachable."
    assert ASR.exception(failures["hung up"]) == "The speech recognizer is not reachable."
    assert TTS.exception(failures["cut"]) == "The speech synthesizer's audio was cut off."
    assert TTS.exception(failures["silent"]) == "The speech synthesizer did not answer in time."
    assert ASR.exception(failures["no free connection"]) == (
        "The speech recognizer did not answer in time."
    )


def test_the_openai_sdks_client_is_the_same_transport_in_httpx2():
    """The LLM's client (httpx2, the SDK's httpx) rides the same aiohttp transport: a request
    is answered, and a refused connection is httpx2's ConnectError (the SDK's "connection
    error", the notice's "not reachable")."""
    import httpx2

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"sse"})

    async def go(base: str) -> tuple[type, bytes, BaseException]:
        client = http.sdk_client(httpx2.Timeout(5.0))
        try:
            transport = type(client._transport)
            body = (await client.get(base)).content
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                refused = f"http://127.0.0.1:{s.getsockname()[1]}/"
            try:
                await client.get(refused)
            except httpx2.HTTPError as exc:
                return transport, body, exc
            raise AssertionError("no failure")
        finally:
            await client.aclose()

    with running_server(app) as addr:
        transport, body, refused = asyncio.run(go(f"http://{addr}/"))
    assert issubclass(transport, http.AiohttpTransport) and transport.hx is httpx2
    assert body == b"sse" and type(refused) is httpx2.ConnectError

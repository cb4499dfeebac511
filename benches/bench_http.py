"""The backends' HTTP transport (httpx over aiohttp) vs httpx's own (httpcore), client CPU.

What a device's turn asks of the remote backends, many devices at once: an ASR upload (a
96 KB WAV, multipart, a small JSON answer), a TTS stream (20 chunks of 4 KB, 10 ms apart, so
the streams of many turns are held open together) and an LLM completion through the openai
SDK (12 SSE events). The server is a child process (a bare asyncio HTTP/1.1 server, the
listening socket bound here and passed to it: no readiness polling), so the figure is the
client's own CPU per request (this process's user + system time), ours against the peer on
the same server, alternating. The untimed suite run checks every body with a few requests;
timed, ``CONCURRENCY`` clients hold ``PAIRS`` ASR + TTS pairs and ``COMPLETIONS`` LLM streams.

Timed run:
    .venv/bin/python -m pytest benches/bench_http.py -s --benchmark-enable
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from echokit_fast.backends import http

CONCURRENCY = 300
PAIRS = 3000
COMPLETIONS = 2000
WAV = b"RIFF" + bytes(96_000)
CHUNK = b"a" * 4096
CHUNKS = 20
EVENTS = 12
EVENT = (
    b'data: {"id":"c","object":"chat.completion.chunk",'
    b'"choices":[{"index":0,"delta":{"content":"word "}}]}\n\n'
)


async def _serve(sock: socket.socket) -> None:
    """The child's server: /asr answers JSON, /tts streams CHUNKS chunks, /llm SSE events."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                length = next(
                    (
                        int(v)
                        for k, _, v in (h.partition(b":") for h in lines[1:])
                        if k.strip().lower() == b"content-length"
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                if path == b"/tts":
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    for _ in range(CHUNKS):
                        writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                        await writer.drain()
                        await asyncio.sleep(0.01)
                    writer.write(b"0\r\n\r\n")
                elif path == b"/llm":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n"
                    )
                    for event in [EVENT] * EVENTS + [b"data: [DONE]\n\n"]:
                        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    writer.write(b"0\r\n\r\n")
                else:
                    answer = json.dumps({"text": "hello", "bytes": len(body)}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock, backlog=4096)
    async with server:
        await server.serve_forever()


@contextmanager
def _server() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    child = subprocess.Popen(
        [sys.executable, __file__, str(sock.fileno())], pass_fds=(sock.fileno(),)
    )
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        child.terminate()
        child.wait(10)
        sock.close()


async def _pairs(client: httpx.AsyncClient, base: str, concurrency: int, total: int) -> None:
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            resp = await client.post(base + "/asr", files={"file": ("a.wav", WAV, "audio/wav")})
            assert resp.json()["text"] == "hello" and resp.json()["bytes"] > len(WAV)
            async with client.stream("GET", base + "/tts") as resp:
                got = 0
                async for chunk in resp.aiter_bytes():
                    got += len(chunk)
            assert got == CHUNKS * len(CHUNK)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _completions(client: Any, base: str, concurrency: int, total: int) -> None:
    import openai

    sdk = openai.AsyncOpenAI(api_key="k", base_url=base, max_retries=0, http_client=client)
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            stream = await sdk.post(
                base + "/llm",
                cast_to=object,
                body={"model": "m", "messages": [], "stream": True},
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            events = [event async for event in stream]
            assert len(events) == EVENTS

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # the caller closes client


def _cpu_per_request(
    make: Callable[[], Any], run: Callable[..., Awaitable[None]], concurrency: int, total: int
) -> float:
    """Client CPU (ms) per request of ``run``, ``concurrency`` at once, a fresh client."""

    async def go(base: str) -> float:
        client = make()
        try:
            await run(client, base, 1, 1)  # imports and a first connection outside the figure
            start = time.process_time()
            await run(client, base, concurrency, total)
            return (time.process_time() - start) * 1e3 / total
        finally:
            await client.aclose()

    with _server() as base:
        return asyncio.run(go(base))


#: the peer's limits: the openai SDK's own (100 idle connections kept; with no cap on idle
#: connections httpcore's pool walk makes it ~25 ms a pair at 300 at once)
PEER_LIMITS = {"max_connections": 1000, "max_keepalive_connections": 100}


def _peer_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(**PEER_LIMITS))


def _peer_sdk_client() -> Any:
    import httpx2

    return httpx2.AsyncClient(
        timeout=30.0, limits=httpx2.Limits(**PEER_LIMITS), follow_redirects=True
    )


CASES = {
    "ASR upload + TTS stream": (lambda: http.client(30.0), _peer_client, _pairs, PAIRS),
    "LLM completion (openai SDK)": (
        lambda: http.sdk_client(30.0),
        _peer_sdk_client,
        _completions,
        COMPLETIONS,
    ),
}


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_client_cpu_per_request_ours_vs_httpcore(benchmark, case: str) -> None:
    ours, peer, run, total = CASES[case]
    concurrency = 4 if benchmark.disabled else CONCURRENCY
    total = 8 if benchmark.disabled else total
    figures: dict[str, list[float]] = {"ours": [], "peer": []}

    def pair() -> None:
        figures["ours"].append(_cpu_per_request(ours, run, concurrency, total))
        figures["peer"].append(_cpu_per_request(peer, run, concurrency, total))

    benchmark.group = f"http transport: {case}, {concurrency} at once"
    benchmark.pedantic(pair, rounds=1 if benchmark.disabled else 2, iterations=1)
    o, p = min(figures["ours"]), min(figures["peer"])
    info = {"ours_ms": round(o, 3), "httpcore_ms": round(p, 3), "ratio": round(o / p, 2)}
    benchmark.extra_info.update(info)
    print(f"\nhttp {case}: {json.dumps(info)}")


if __name__ == "__main__":  # the child: serve on the listening socket passed as fd argv[1]
    asyncio.run(_serve(socket.socket(fileno=int(sys.argv[1]))))

"""Stand-in backend servers for tests: small OpenAI-compatible / EchoKit-ecosystem HTTP services.

Each stand-in is a Starlette app (``.app``) with a script of replies and a record of the
requests it received. Start it with the ``serve`` fixture (real uvicorn on a loopback port)::

    chat = ChatServer()
    addr = serve(chat.app)                       # "127.0.0.1:PORT"
    chat.reply(["Hello", " there."])             # next request: these two content deltas
    chat.fail(500)                               # the one after: HTTP 500
    ...
    chat.requests[0].json["messages"]            # what the client sent

Scripts are FIFO queues consumed one item per request; with an empty queue a server answers
with its ``default``. The servers run in uvicorn's thread, so every observation a test waits on
is a ``threading.Event`` (``wait(timeout)`` it, via ``asyncio.to_thread`` inside async code) or
a counter read after the client call returned.

Servers
-------
* :class:`ChatServer` — ``POST /v1/chat/completions`` streaming SSE chunks; scripted text deltas
  (split as the test chooses), OpenAI-style incremental tool-call deltas (:func:`tool_call`),
  a delay before the first chunk and between chunks, failures: an HTTP status with a JSON error
  body, the connection cut mid-stream, never answering. Also ``GET /prompts`` (JSON set with
  :attr:`ChatServer.prompts`) and ``GET /include/{name}`` (text from :attr:`ChatServer.includes`,
  404 when missing) for ``prompts_url`` and ``{{url}}`` includes.
* :class:`ResponsesServer` — ``POST /v1/responses`` (OpenAI Responses API) streaming SSE events
  (``event: TYPE`` + ``data: JSON``, the sequence a real server sends: ``response.created``,
  item/part events, ``response.output_text.delta`` per scripted text, ``function_call`` items
  from :func:`function_call`, ``response.completed`` with the response id); a reply can end
  with ``response.failed`` or an ``error`` event, stop before ``response.completed``, or be
  cut mid-stream. Response ids are ``resp_1``, ``resp_2``, ... in request order unless scripted.
* :class:`ASRServer` — ``POST /v1/audio/transcriptions``; records the multipart parts in order
  (name, filename, content) and answers ``{"text": ...}`` from its script.
* :class:`MCPStandin` — an MCP server (the ``mcp`` package's own server) with the tools
  ``weather(city)`` (answers ``{"city", "temp": 21}`` as JSON text) and ``boom()`` (fails);
  ``.app`` serves streamable HTTP at ``/mcp`` (``transport="sse"``: SSE at ``/sse``).
* :class:`TTSServer` — ``POST /v1/audio/speech`` (OpenAI/Groq: a WAV at :attr:`TTSServer.rate`),
  ``POST /gsv`` (GPT-SoVITS batch: a WAV at the requested ``sample_rate``),
  ``POST /v1/audio/stream_speech`` (GPT-SoVITS streaming: raw s16le PCM at the requested rate,
  sent in :attr:`TTSServer.stream_chunk` byte pieces, labelled ``audio/pcm;rate=32000`` like the
  real gsv_tts) and ``POST /v1/tts`` (fish.audio: MessagePack body, WAV reply). Each reply is
  a 440 Hz tone lasting :meth:`TTSServer.duration` (``seconds_per_char`` x characters).

Failure items (for every server's ``fail``/script): ``Fail(status=500)`` (JSON error body),
``Fail(status=429, headers={"Retry-After": "1"})`` (with those headers),
``Fail(status=200, body=...)`` (that body, JSON for a dict: a wrong answer with a 200),
``Fail(hang=True)`` (never answer; the handler returns when the client goes away),
``Fail(cut_after=N)`` (send the status line and N body bytes, then drop the connection),
``Fail(delay=s)`` (answer normally after ``s`` seconds), ``Fail(flood=chunk, every=s)`` (a 200
whose body never ends: ``body`` (bytes) first, then ``chunk`` every ``s`` seconds until the
client goes away: a trickle with one byte every few seconds, an endless or huge body with big
chunks at once; the bytes sent are counted in ``sent``). A :class:`ChatReply` can also go on
forever (``forever``: one more delta every ``delay`` seconds, e.g. ``""`` for empty deltas).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from echokit_fast.audio import float_to_pcm16, write_wav
from echokit_fast.backends.llm.mcp import MCPTool, MCPTools

__all__ = [
    "ASRServer",
    "ChatReply",
    "ChatServer",
    "Fail",
    "FakeTools",
    "MCPStandin",
    "Recorded",
    "ResponsesReply",
    "ResponsesServer",
    "TTSServer",
    "function_call",
    "tone",
    "tool_call",
]


@dataclass
class Recorded:
    """One request a stand-in received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    #: the JSON body (key order kept), or None
    json: Any = None
    #: multipart parts in order: (name, filename or None, bytes or str)
    parts: list[tuple[str, str | None, bytes | str]] = field(default_factory=list)

    def part(self, name: str) -> bytes | str:
        for n, _f, v in self.parts:
            if n == name:
                return v
        raise KeyError(name)


@dataclass
class Fail:
    """A scripted failure (see the module docstring)."""

    status: int | None = None
    hang: bool = False
    cut_after: int | None = None
    delay: float = 0.0
    body: Any = None
    flood: bytes | None = None
    every: float = 0.0
    headers: dict[str, str] | None = None  # of a status answer (e.g. Retry-After)


class _Base:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Any] = deque()
        #: set whenever a client goes away before a reply was complete (hang, cancelled stream)
        self.disconnected = threading.Event()
        self.disconnects = 0
        #: set when a request arrived (after recording it)
        self.received = threading.Event()
        #: body bytes sent by ``Fail(flood=...)`` answers
        self.sent = 0

    def fail(self, status: int | None = None, **kw: Any) -> None:
        """Queue a failure for the next request: ``fail(500)``, ``fail(hang=True)``, ..."""
        self.script.append(Fail(status=status, **kw))

    def _next(self, default: Any) -> Any:
        return self.script.popleft() if self.script else default

    def _gone(self) -> None:
        self.disconnects += 1
        self.disconnected.set()

    async def _record(self, request: Request, *, form: bool = False) -> Recorded:
        body = await request.body()
        rec = Recorded(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        if form:
            async with request.form(max_part_size=64 * 1024 * 1024) as data:
                for name, value in data.multi_items():
                    if isinstance(value, str):
                        rec.parts.append((name, None, value))
                    else:
                        rec.parts.append((name, value.filename, await value.read()))
        else:
            try:
                rec.json = json.loads(body) if body else None
            except ValueError:
                rec.json = None
        self.requests.append(rec)
        self.received.set()
        return rec

    async def _failure(self, fail: Fail, request: Request) -> Response | None:
        """Play a failure; None means "answer normally" (after a delay)."""
        if fail.delay:
            await asyncio.sleep(fail.delay)
        if fail.hang:
            # The body was read: the next receive() returns only when the client disconnects.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self._gone()
            return Response(status_code=499)
        if fail.cut_after is not None:
            return _Cut(fail.cut_after, self)
        if fail.flood is not None:
            return _Flood(fail, self)
        if fail.status is not None:
            body = (
                fail.body if fail.body is not None else {"error": {"message": "scripted failure"}}
            )
            if isinstance(body, (bytes, str)):
                return Response(body, status_code=fail.status, headers=fail.headers)
            return JSONResponse(body, status_code=fail.status, headers=fail.headers)
        return None


class _Cut(Response):
    """Status 200, ``n`` bytes of a chunked body, then the connection is dropped."""

    def __init__(self, n: int, owner: _Base, payload: bytes = b"") -> None:
        super().__init__(status_code=200)
        self.n = n
        self.payload = payload
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(
            {"type": "http.response.body", "body": self.payload[: self.n], "more_body": True}
        )
        # Returning without completing the body makes uvicorn drop the connection.


class _Flood(Response):
    """Status 200 and a body that never ends (see :class:`Fail`)."""

    def __init__(self, fail: Fail, owner: _Base) -> None:
        super().__init__(status_code=200)
        self.fail = fail
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = _Watch(receive, self.owner)
        chunks = [self.fail.body or b""]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while not watch.gone:
                for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    self.owner.sent += len(chunk)
                await watch.sleep(self.fail.every)
                chunks = [self.fail.flood or b""]
        finally:
            watch.stop()


class _Watch:
    """Watches a streaming response's connection: ``gone`` turns true (and the owner records a
    disconnect) as soon as the client goes away, even while the sender is sleeping."""

    def __init__(self, receive: Receive, owner: _Base) -> None:
        self.gone = False
        self._owner = owner
        self._event = asyncio.Event()
        self._task = asyncio.ensure_future(self._run(receive))

    async def _run(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._event.set()
        self._owner._gone()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the client goes away."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)

    def stop(self) -> None:
        self._task.cancel()


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    """A float32 sine of ``round(seconds * rate)`` samples at amplitude 0.5."""
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Chat completions
# --------------------------------------------------------------------------------------------


@dataclass
class ChatReply:
    """One scripted streamed answer. ``deltas`` items: a str (content delta) or a dict (a raw
    ``delta`` object, e.g. from :func:`tool_call`). ``cut_after``: drop the connection after
    that many deltas. ``finish_reason`` None -> "tool_calls" if any dict delta has tool calls,
    else "stop". ``done``: send ``data: [DONE]``. ``forever``: after the deltas, send this one
    every ``delay`` seconds until the client goes away (the answer never ends)."""

    deltas: list[str | dict[str, Any]]
    first_delay: float = 0.0
    delay: float = 0.0
    cut_after: int | None = None
    finish_reason: str | None = None
    done: bool = True
    forever: str | dict[str, Any] | None = None


def tool_call(
    call_id: str, name: str, arguments: str, *, index: int = 0, pieces: int = 3
) -> list[dict[str, Any]]:
    """OpenAI-style incremental deltas for one tool call: the first carries id, type and name
    with empty arguments, the next ``pieces`` carry the ``arguments`` string in parts."""
    out: list[dict[str, Any]] = [
        {
            "tool_calls": [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
    ]
    step = max(1, -(-len(arguments) // pieces))
    for i in range(0, len(arguments), step):
        out.append(
            {"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + step]}}]}
        )
    return out


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "standin",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class ChatServer(_Base):
    """OpenAI Chat Completions stand-in (streaming only). See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.default = ChatReply(["OK."])
        #: served at GET /prompts (None -> 404)
        self.prompts: Any = None
        #: name -> text served at GET /include/{name}
        self.includes: dict[str, str] = {}
        self.include_hits: dict[str, int] = {}
        #: number of streams sent completely
        self.completed = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/prompts", self._prompts, methods=["GET"]),
                Route("/include/{name}", self._include, methods=["GET"]),
            ]
        )

    def reply(self, deltas: list[str | dict[str, Any]] | str, **kw: Any) -> None:
        """Queue a streamed answer (see :class:`ChatReply`)."""
        self.script.append(ChatReply([deltas] if isinstance(deltas, str) else deltas, **kw))

    async def _prompts(self, request: Request) -> Response:
        if self.prompts is None:
            return PlainTextResponse("no prompts", status_code=404)
        return JSONResponse(self.prompts)

    async def _include(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.include_hits[name] = self.include_hits.get(name, 0) + 1
        if name not in self.includes:
            return PlainTextResponse("missing", status_code=404)
        return PlainTextResponse(self.includes[name])

    async def _chat(self, request: Request) -> Response:
        await self._record(request)
        item = self._next(self.default)
        if isinstance(item, Fail):
            failure = await self._failure(item, request)
            if failure is not None:
                return failure
            item = self.default
        return _SSE(item, self)


class _SSE(Response):
    def __init__(self, reply: ChatReply, owner: ChatServer) -> None:
        super().__init__(status_code=200)
        self.reply = reply
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        r = self.reply
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        watch = _Watch(receive, self.owner)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if r.first_delay:
                await watch.sleep(r.first_delay)
            has_tools = False
            for i, d in enumerate(r.deltas):
                if r.cut_after is not None and i >= r.cut_after:
                    return  # incomplete chunked body: uvicorn drops the connection
                if i and r.delay:
                    await watch.sleep(r.delay)
                if watch.gone:
                    return
                delta = {"content": d} if isinstance(d, str) else dict(d)
                has_tools = has_tools or "tool_calls" in delta
                if i == 0:
                    delta = {"role": "assistant", **delta}
                await send({"type": "http.response.body", "body": _chunk(delta), "more_body": True})
            if r.cut_after is not None:
                return
            if r.forever is not None:
                delta = {"content": r.forever} if isinstance(r.forever, str) else r.forever
                while not watch.gone:
                    await watch.sleep(r.delay)
                    await send(
                        {"type": "http.response.body", "body": _chunk(delta), "more_body": True}
                    )
                return
            finish = r.finish_reason or ("tool_calls" if has_tools else "stop")
            tail = _chunk({}, finish) + (b"data: [DONE]\n\n" if r.done else b"")
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            self.owner.completed += 1
        finally:
            watch.stop()


# --------------------------------------------------------------------------------------------
# Responses API
# --------------------------------------------------------------------------------------------


@dataclass
class ResponsesReply:
    """One scripted streamed response. ``items``: a str (one ``response.output_text.delta``)
    or a dict from :func:`function_call`. ``id``: the response id (default ``resp_<request
    number>``). ``end``: ``"completed"``, ``"failed"`` (``response.failed`` with
    ``error_message``), ``"error"`` (an ``error`` event) or ``"none"`` (the body just ends).
    ``cut_after``: drop the connection after that many items."""

    items: list[str | dict[str, Any]]
    id: str | None = None
    end: str = "completed"
    error_message: str = "scripted failure"
    cut_after: int | None = None
    delay: float = 0.0


def function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A ``function_call`` output item (as in ``response.output_item.done``)."""
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


class ResponsesServer(_Base):
    """OpenAI Responses API stand-in (streaming only). See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.default = ResponsesReply(["OK."])
        #: number of streams sent completely
        self.completed = 0
        self.app = Starlette(routes=[Route("/v1/responses", self._responses, methods=["POST"])])

    def reply(self, items: list[str | dict[str, Any]] | str, **kw: Any) -> None:
        """Queue a streamed response (see :class:`ResponsesReply`)."""
        self.script.append(ResponsesReply([items] if isinstance(items, str) else items, **kw))

    async def _responses(self, request: Request) -> Response:
        await self._record(request)
        number = len(self.requests)
        item = self._next(self.default)
        if isinstance(item, Fail):
            failure = await self._failure(item, request)
            if failure is not None:
                return failure
            item = self.default
        return _ResponsesSSE(item, item.id or f"resp_{number}", self)


def _event(seq: list[int], kind: str, **data: Any) -> bytes:
    seq[0] += 1
    obj = {"type": kind, "sequence_number": seq[0], **data}
    return f"event: {kind}\ndata: {json.dumps(obj)}\n\n".encode()


class _ResponsesSSE(Response):
    def __init__(self, reply: ResponsesReply, rid: str, owner: ResponsesServer) -> None:
        super().__init__(status_code=200)
        self.reply = reply
        self.rid = rid
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        r, rid, seq = self.reply, self.rid, [0]
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        watch = _Watch(receive, self.owner)
        resp = {"id": rid, "object": "response", "status": "in_progress", "output": []}

        async def put(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await put(_event(seq, "response.created", response=resp))
            await put(_event(seq, "response.in_progress", response=resp))
            output: list[dict[str, Any]] = []
            text: list[str] = []
            for i, it in enumerate(r.items):
                if r.cut_after is not None and i >= r.cut_after:
                    return  # incomplete chunked body: uvicorn drops the connection
                if i and r.delay:
                    await watch.sleep(r.delay)
                if watch.gone:
                    return
                if isinstance(it, str):
                    if not text:
                        msg = {"type": "message", "id": "msg_1", "role": "assistant"}
                        await put(_event(seq, "response.output_item.added", item=msg))
                    text.append(it)
                    await put(_event(seq, "response.output_text.delta", item_id="msg_1", delta=it))
                else:
                    await put(_event(seq, "response.output_item.added", item=it))
                    await put(
                        _event(
                            seq,
                            "response.function_call_arguments.done",
                            item_id=it["id"],
                            arguments=it["arguments"],
                        )
                    )
                    await put(_event(seq, "response.output_item.done", item=it))
                    output.append(it)
            if r.cut_after is not None:
                return
            if text:
                content = [{"type": "output_text", "text": "".join(text)}]
                msg = {"type": "message", "id": "msg_1", "role": "assistant", "content": content}
                await put(_event(seq, "response.output_text.done", text="".join(text)))
                await put(_event(seq, "response.output_item.done", item=msg))
                output.insert(0, msg)
            error = {"code": "server_error", "message": r.error_message}
            if r.end == "completed":
                done = {**resp, "status": "completed", "output": output}
                tail = _event(seq, "response.completed", response=done)
            elif r.end == "failed":
                failed = {**resp, "status": "failed", "error": error}
                tail = _event(seq, "response.failed", response=failed)
            elif r.end == "error":
                tail = _event(seq, "error", **error)
            else:
                tail = b""
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            self.owner.completed += 1
        finally:
            watch.stop()


# --------------------------------------------------------------------------------------------
# MCP
# --------------------------------------------------------------------------------------------


class MCPStandin:
    """A real MCP server with two tools (see the module docstring); ``calls`` records the
    ``(tool, arguments)`` it ran."""

    def __init__(self, transport: str = "http_streamable") -> None:
        from mcp.server.mcpserver.server import MCPServer

        self.calls: list[tuple[str, dict[str, Any]]] = []
        srv = MCPServer("standin")

        @srv.tool(description="The weather in a city")
        def weather(city: str) -> dict[str, Any]:
            self.calls.append(("weather", {"city": city}))
            return {"city": city, "temp": 21}

        @srv.tool()
        def boom() -> str:
            self.calls.append(("boom", {}))
            raise ValueError("scripted tool failure")

        self.path = "/sse" if transport == "sse" else "/mcp"
        self.app = srv.sse_app() if transport == "sse" else srv.streamable_http_app()


class FakeTools(MCPTools):
    """MCP tools without a server: one ``weather`` tool (``call_mcp_message`` "Checking.")
    whose calls are recorded in ``calls`` and answered locally with ``{"temp": 21}``; any
    other name goes through the real lookup (a device's tool, or the "tool not found" answer;
    no network)."""

    def __init__(self) -> None:
        super().__init__()
        self.tools["weather"] = MCPTool(
            "weather", "Weather", {"type": "object"}, "http://x", "http_streamable", "Checking."
        )
        self.calls: list[tuple[str, str]] = []

    async def call(
        self, name: str, arguments: str, *, device: Any = None, timeout: float | None = 60.0
    ) -> list[str]:
        if name not in self.tools:
            return await super().call(name, arguments, device=device, timeout=timeout)
        self.calls.append((name, arguments))
        return [json.dumps({"temp": 21})]


# --------------------------------------------------------------------------------------------
# ASR
# --------------------------------------------------------------------------------------------


class ASRServer(_Base):
    """``POST /v1/audio/transcriptions`` stand-in. Script items: a str (answer
    ``{"text": str}``), a dict (answered as JSON as is) or a :class:`Fail`."""

    def __init__(self, default: str = "hello world") -> None:
        super().__init__()
        self.default: Any = default
        self.app = Starlette(
            routes=[Route("/v1/audio/transcriptions", self._asr, methods=["POST"])]
        )

    def answer(self, text_or_json: str | dict[str, Any]) -> None:
        self.script.append(text_or_json)

    async def _asr(self, request: Request) -> Response:
        await self._record(request, form=True)
        item = self._next(self.default)
        if isinstance(item, Fail):
            failure = await self._failure(item, request)
            if failure is not None:
                return failure
            item = self.default
        return JSONResponse({"text": item} if isinstance(item, str) else item)


# --------------------------------------------------------------------------------------------
# TTS
# --------------------------------------------------------------------------------------------


class TTSServer(_Base):
    """TTS stand-in for openai/groq, gsv, stream_gsv and fish (see the module docstring)."""

    def __init__(self, *, rate: int = 24000, seconds_per_char: float = 0.02) -> None:
        super().__init__()
        #: sample rate of the OpenAI/Groq and fish WAV replies
        self.rate = rate
        self.seconds_per_char = seconds_per_char
        #: byte size of the pieces of a stream_gsv reply
        self.stream_chunk = 4000
        #: delay between stream_gsv pieces
        self.stream_delay = 0.0
        #: set to True when a stream_gsv reply was sent completely
        self.completed = 0
        self.app = Starlette(
            routes=[
                Route("/v1/audio/speech", self._openai, methods=["POST"]),
                Route("/gsv", self._gsv, methods=["POST"]),
                Route("/v1/audio/stream_speech", self._stream, methods=["POST"]),
                Route("/v1/tts", self._fish, methods=["POST"]),
            ]
        )

    def duration(self, text: str) -> float:
        """Seconds of audio answered for ``text``."""
        return self.seconds_per_char * len(text)

    async def _begin(self, request: Request) -> tuple[Recorded, Response | None]:
        rec = await self._record(request)
        item = self._next(None)
        if isinstance(item, Fail):
            return rec, await self._failure(item, request)
        return rec, None

    async def _openai(self, request: Request) -> Response:
        rec, failure = await self._begin(request)
        if failure is not None:
            return failure
        wav = write_wav(tone(self.duration(rec.json["input"]), self.rate), self.rate)
        return Response(wav, media_type="audio/wav")

    async def _gsv(self, request: Request) -> Response:
        rec, failure = await self._begin(request)
        if failure is not None:
            return failure
        rate = int(rec.json.get("sample_rate", 32000))
        wav = write_wav(tone(self.duration(rec.json["input"]), rate), rate)
        return Response(wav, media_type="audio/wav")

    async def _fish(self, request: Request) -> Response:
        import msgpack

        rec = await self._record(request)
        rec.json = msgpack.unpackb(rec.body)
        item = self._next(None)
        if isinstance(item, Fail):
            failure = await self._failure(item, request)
            if failure is not None:
                return failure
        wav = write_wav(tone(self.duration(rec.json["text"]), self.rate), self.rate)
        return Response(wav, media_type="audio/wav")

    async def _stream(self, request: Request) -> Response:
        rec, failure = await self._begin(request)
        if failure is not None:
            if isinstance(failure, _Cut):
                rate = int(rec.json.get("sample_rate", 32000))
                failure.payload = float_to_pcm16(tone(self.duration(rec.json["input"]), rate))
            return failure
        rate = int(rec.json.get("sample_rate", 32000))
        pcm = float_to_pcm16(tone(self.duration(rec.json["input"]), rate))
        return _PCMStream(pcm, self)


class _PCMStream(Response):
    def __init__(self, pcm: bytes, owner: TTSServer) -> None:
        super().__init__(status_code=200)
        self.pcm = pcm
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"audio/pcm;rate=32000")]
        step = self.owner.stream_chunk
        watch = _Watch(receive, self.owner)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for i in range(0, len(self.pcm), step):
                if i and self.owner.stream_delay:
                    await watch.sleep(self.owner.stream_delay)
                if watch.gone:
                    return
                piece = self.pcm[i : i + step]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.owner.completed += 1
        finally:
            watch.stop()

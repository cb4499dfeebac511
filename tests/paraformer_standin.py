"""A stand-in for DashScope's realtime ASR (Paraformer) WebSocket endpoint, for tests.

A ``websockets`` server on a loopback port, in a thread with its own event loop, speaking the
wire format DashScope documents: the handshake checks ``Authorization: Bearer <token>`` (401
otherwise); ``run-task`` is answered ``task-started``; binary messages are 16 kHz PCM16
audio; ``finish-task`` ends the audio, then ``task-finished``. Several tasks may run one after
the other on one connection. Use it as a context manager::

    with ParaformerServer() as asr:                  # asr.url: "ws://127.0.0.1:PORT/..."
        asr.say("Hello world.", "How are you?")      # the next task's sentences
        asr.fail(Fail(status=401))                   # the next connection: HTTP 401
        ...
        asr.tasks[0].run_task["payload"]["parameters"]  # what the client sent

Recognition is driven by the audio's loudness, in 100 ms blocks (whole blocks only, however the
audio is split into messages): a block with an RMS above :data:`VOICED_RMS` is speech. While a
sentence is spoken, each speech block gives a partial ``result-generated`` (one more word of
the scripted sentence, or one more character of a Chinese one; sent only when it changes);
``end_silence_ms`` of quiet after speech ends the sentence (``sentence_end: true``, the whole
sentence, ``begin_time``/``end_time`` in ms of the task's audio). ``finish-task`` ends a
sentence in progress. Speech after the scripted sentences is ``"more"``.

Scripts are FIFO queues, one item per task (per connection for a ``status`` failure); with an
empty queue a task says :data:`DEFAULT`. :class:`Fail` items: ``status`` (refuse the
handshake), ``failed="start"`` (``task-failed`` instead of ``task-started``), ``failed_after=N``
(``task-failed`` once N bytes of audio came, then close), ``cut_after=N`` (drop the TCP
connection once N bytes came, no Close frame), ``hang=True`` (never answer ``run-task``),
``no_finish=True`` (never answer ``finish-task``).

Everything a test waits on is a ``threading.Event``: :attr:`ParaformerServer.heard` is set when
audio of a started task arrives, :attr:`ParaformerServer.finals` at every ``sentence_end``
sent, :attr:`ParaformerServer.closed` when a connection ends. What the server saw is in
:attr:`ParaformerServer.tasks` and :attr:`ParaformerServer.handshakes`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["DEFAULT", "VOICED_RMS", "Fail", "ParaformerServer", "Say", "Task"]

VOICED_RMS = 500  # PCM16 units (about -36 dBFS)
BLOCK = 3200  # 100 ms of 16 kHz PCM16
DEFAULT = ("hello world",)


@dataclass
class Say:
    """A task's sentences and how much quiet ends one."""

    sentences: tuple[str, ...] = DEFAULT
    end_silence_ms: int = 500


@dataclass
class Fail:
    status: int | None = None
    failed: str | None = None
    failed_after: int | None = None
    cut_after: int | None = None
    hang: bool = False
    no_finish: bool = False
    code: str = "InvalidParameter"


@dataclass
class Task:
    """One task as the stand-in saw it."""

    run_task: dict[str, Any]
    audio: bytearray = field(default_factory=bytearray)
    finish_task: dict[str, Any] | None = None
    #: the result-generated sentences sent, in order
    results: list[dict[str, Any]] = field(default_factory=list)
    #: bytes of audio received when the first sentence_end was sent
    audio_at_first_final: int | None = None


class _Recognizer:
    """The loudness-driven sentences of one task (see the module docstring)."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.pending = bytearray()
        self.blocks = 0  # whole blocks processed
        self.index = 0  # the sentence being (or next to be) spoken
        self.voiced = 0  # speech blocks of the current sentence
        self.quiet_ms = 0
        self.begin_ms = 0
        self.end_ms = 0
        self.shown = ""

    def _sentence(self) -> str:
        s = self.say.sentences
        return s[self.index] if self.index < len(s) else "more"

    def _partial(self) -> str:
        s = self._sentence()
        if " " in s:
            return " ".join(s.split()[: self.voiced])
        return s[: self.voiced]

    def _result(self, text: str, end: bool) -> dict[str, Any]:
        return {
            "begin_time": self.begin_ms,
            "end_time": self.end_ms if end else None,
            "text": text,
            "heartbeat": False,
            "sentence_end": end,
            "sentence_id": self.index + 1,
            "words": [],
        }

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.pending += data
        out = []
        while len(self.pending) >= BLOCK:
            block = np.frombuffer(bytes(self.pending[:BLOCK]), "<i2").astype(np.float64)
            del self.pending[:BLOCK]
            self.blocks += 1
            voiced = float(np.sqrt(np.mean(block**2))) > VOICED_RMS
            if voiced:
                if self.voiced == 0:
                    self.begin_ms = (self.blocks - 1) * 100
                self.voiced += 1
                self.quiet_ms = 0
                self.end_ms = self.blocks * 100
                text = self._partial()
                if text != self.shown:
                    self.shown = text
                    out.append(self._result(text, False))
            elif self.voiced:
                self.quiet_ms += 100
                if self.quiet_ms >= self.say.end_silence_ms:
                    out.append(self.end())
        return out

    def end(self) -> dict[str, Any]:
        result = self._result(self._sentence(), True)
        self.index += 1
        self.voiced = 0
        self.shown = ""
        return result

    def finish(self) -> list[dict[str, Any]]:
        return [self.end()] if self.voiced else []


class ParaformerServer:
    def __init__(self, token: str = "sk-test") -> None:
        self.token = token
        self.script: deque[Say | Fail] = deque()
        self.tasks: list[Task] = []
        #: the request headers of every handshake (lower-case names)
        self.handshakes: list[dict[str, str]] = []
        self.heard = threading.Event()
        self.finals = threading.Event()
        self.closed = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- script --------------------------------------------------------------------------

    def say(self, *sentences: str, end_silence_ms: int = 500) -> None:
        self.script.append(Say(sentences or DEFAULT, end_silence_ms))

    def fail(self, fail: Fail) -> None:
        self.script.append(fail)

    def _next(self) -> Say | Fail:
        with self._lock:
            return self.script.popleft() if self.script else Say()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api-ws/v1/inference"

    # -- running ---------------------------------------------------------------------------

    def __enter__(self) -> ParaformerServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the Paraformer stand-in did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None and self._stop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handle, "127.0.0.1", 0, process_request=self._handshake, compression=None
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _handshake(self, conn: ServerConnection, request: Any) -> Any:
        self.handshakes.append({k.lower(): v for k, v in request.headers.raw_items()})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return conn.respond(HTTPStatus.UNAUTHORIZED, "Invalid API-key provided.\n")
        with self._lock:
            head = self.script[0] if self.script else None
            if isinstance(head, Fail) and head.status is not None:
                self.script.popleft()
                return conn.respond(HTTPStatus(head.status), "scripted failure\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            await self._serve(ws)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def _serve(self, ws: ServerConnection) -> None:
        task: Task | None = None
        plan: Say | Fail = Say()
        rec: _Recognizer | None = None

        async def send(event: str, payload: dict[str, Any], **header: Any) -> None:
            assert task is not None
            tid = task.run_task["header"]["task_id"]
            await ws.send(
                json.dumps(
                    {
                        "header": {"task_id": tid, "event": event, "attributes": {}, **header},
                        "payload": payload,
                    }
                )
            )

        async def failed() -> None:
            assert isinstance(plan, Fail)
            await send(
                "task-failed",
                {},
                error_code=plan.code,
                error_message="scripted failure",
            )
            await ws.close()

        async def results(sentences: list[dict[str, Any]]) -> None:
            assert task is not None
            for s in sentences:
                task.results.append(s)
                await send("result-generated", {"output": {"sentence": s}, "usage": None})
                if s["sentence_end"]:
                    if task.audio_at_first_final is None:
                        task.audio_at_first_final = len(task.audio)
                    self.finals.set()

        async for message in ws:
            if isinstance(message, bytes):
                if task is None or rec is None:
                    continue
                task.audio += message
                self.heard.set()
                if isinstance(plan, Fail):
                    if plan.cut_after is not None and len(task.audio) >= plan.cut_after:
                        ws.transport.abort()
                        return
                    if plan.failed_after is not None and len(task.audio) >= plan.failed_after:
                        await failed()
                        return
                await results(rec.feed(message))
                continue
            msg = json.loads(message)
            action = msg["header"]["action"]
            if action == "run-task":
                task = Task(msg)
                self.tasks.append(task)
                plan = self._next()
                rec = _Recognizer(plan if isinstance(plan, Say) else Say())
                if isinstance(plan, Fail) and plan.hang:
                    continue
                if isinstance(plan, Fail) and plan.failed == "start":
                    await failed()
                    return
                await send("task-started", {})
            elif action == "finish-task" and task is not None and rec is not None:
                task.finish_task = msg
                if isinstance(plan, Fail) and plan.no_finish:
                    continue
                await results(rec.finish())
                await send("task-finished", {"output": {}, "usage": None})
                task, rec = None, None

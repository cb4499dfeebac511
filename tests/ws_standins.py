"""Stand-ins for the services that stream over a WebSocket: DashScope CosyVoice and ElevenLabs
stream-input (TTS), DashScope Paraformer (ASR), each a real ``websockets`` server on a loopback
port speaking the service's wire format. Same style as ``tests/standins.py``: a script of
replies, a record of what was received, ``threading.Event`` observations (the server runs in its
own thread)::

    cosy = CosyVoiceServer()
    with running_ws_server(cosy) as addr:       # "127.0.0.1:PORT"
        cosy.script.append(VendorError("InvalidParameter", "bad voice"))
        ...
        cosy.tasks[0]                            # the run-task, as sent (raw text)

Servers
-------
* :class:`CosyVoiceServer` -- any path: per ``run-task`` a ``task-started`` event, then (after
  ``finish-task``) ``result-generated`` events and binary s16le PCM at the ``sample_rate`` the
  task asked for, then ``task-finished``; the connection stays open for the next task. A
  script item is used per task.
* :class:`ElevenLabsServer` -- ``/v1/text-to-speech/{voice}/stream-input?...``: reads the text
  messages up to the end of input (``{"text": ""}``), answers JSON messages with base64 PCM at
  the rate of ``output_format`` (``pcm_16000``), then ``{"isFinal": true}`` and a Close (1000).
  A script item is used per connection.
* :class:`ParaformerServer` -- any path; the handshake needs ``Authorization: Bearer <token>``
  (else 401). Per ``run-task`` a ``task-started`` event; binary messages are 16 kHz PCM16
  audio, recognised as it comes (below); ``finish-task`` ends a sentence in progress, then
  ``task-finished``; the connection stays open for the next task. A script item is used per
  task: :class:`Say` (its sentences; the default says :data:`SAID`), or a failure.

Each TTS answer is a 440 Hz tone (:func:`standins.tone`) of :meth:`duration` seconds
(``seconds_per_char`` x characters), sent in :attr:`chunk`-byte pieces.

Script items: :class:`VendorError` (the service's error message: ``task-failed`` /
``{"error", "message"}`` and a Close 1008), :class:`Raw` (this text message instead of the
audio, then nothing more), :class:`Drop` (drop the TCP connection as soon as the request is in,
no Close frame), ``Fail(cut_after=N)`` (N pieces of audio, then drop the connection),
``Fail(delay=s)`` (wait ``s`` before the first piece), ``Fail(hang=True)`` (never answer).
``refuse = STATUS`` answers every handshake with that HTTP status until set back to None.
For :class:`ParaformerServer`: :class:`VendorError` is ``task-failed`` instead of
``task-started``, ``Fail(hang=True)`` never answers the ``run-task``, ``Fail(cut_after=N)`` drops
the connection once N bytes of audio came, ``Fail(delay=s)`` answers ``finish-task`` ``s``
late.

Paraformer's recognition is driven by the audio's loudness, in 100 ms blocks (whole blocks only,
however the audio is split into messages): a block with an RMS above :data:`VOICED_RMS` is
speech. While a sentence is spoken each speech block gives a partial ``result-generated`` (one
more word of the scripted sentence, or one more character of one without spaces; sent only when
it changes); ``end_silence_ms`` of quiet after speech ends the sentence (``sentence_end: true``,
the whole sentence, ``begin_time``/``end_time`` in ms of the task's audio). Speech after the
scripted sentences is ``"more"``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from standins import Fail, tone
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from echokit_fast.audio import float_to_pcm16

__all__ = [
    "SAID",
    "VOICED_RMS",
    "AsrTask",
    "CosyVoiceServer",
    "Drop",
    "ElevenLabsServer",
    "Handshake",
    "ParaformerServer",
    "Raw",
    "Say",
    "VendorError",
    "running_ws_server",
]


@dataclass
class VendorError:
    """The service reports a failure (see the module docstring)."""

    code: str = "InternalError"
    message: str = "scripted failure"


@dataclass
class Raw:
    """Send ``message`` (a text message) instead of the audio, then nothing more."""

    message: str


@dataclass
class Drop:
    """Drop the TCP connection (no Close frame) as soon as the request is in."""


@dataclass
class Handshake:
    """One opening handshake the stand-in received."""

    path: str  # with the query
    headers: dict[str, str]  # lower-case names

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}


class _WSBase:
    def __init__(self, *, seconds_per_char: float = 0.02) -> None:
        self.seconds_per_char = seconds_per_char
        #: byte size of the audio pieces
        self.chunk = 3200
        #: delay between audio pieces
        self.stream_delay = 0.0
        self.script: deque[Any] = deque()
        #: HTTP status for every handshake (None: accept)
        self.refuse: int | None = None
        self.handshakes: list[Handshake] = []
        #: answers sent completely
        self.completed = 0
        #: set when a request arrived (after recording it)
        self.received = threading.Event()
        #: set whenever a client went away before its answer was complete
        self.disconnected = threading.Event()
        self.disconnects = 0

    def duration(self, text: str) -> float:
        """Seconds of audio answered for ``text``."""
        return self.seconds_per_char * len(text)

    def pcm(self, text: str, rate: int) -> bytes:
        """The s16le answer for ``text`` at ``rate``."""
        return float_to_pcm16(tone(self.duration(text), rate))

    def _next(self) -> Any:
        return self.script.popleft() if self.script else None

    def _gone(self) -> None:
        self.disconnects += 1
        self.disconnected.set()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self.handshakes.append(Handshake(request.path, headers))
        if self.refuse is not None:
            body = json.dumps({"code": "InvalidApiKey", "message": "Invalid API-key provided."})
            return conn.respond(HTTPStatus(self.refuse), body)
        return None

    async def _pause(self, conn: ServerConnection, seconds: float) -> bool:
        """Sleep ``seconds``, waking when the client goes away; True when it is still there."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(conn.wait_closed(), seconds)
        return conn.close_code is None

    async def _failure_before_audio(self, conn: ServerConnection, item: Any) -> bool:
        """Play ``hang`` / ``delay`` / ``Raw``; True when the audio should follow."""
        if isinstance(item, Raw):
            await conn.send(item.message)
            await conn.wait_closed()
            return False
        if isinstance(item, Fail) and item.hang:
            await conn.wait_closed()
            self._gone()
            return False
        if isinstance(item, Fail) and item.delay and not await self._pause(conn, item.delay):
            self._gone()
            return False
        return True

    async def _send_audio(self, conn: ServerConnection, item: Any, pcm: bytes, frame: Any) -> bool:
        """Send ``pcm`` in pieces (``frame(piece)`` builds each message); False when the item
        cut the connection or the client left."""
        cut = item.cut_after if isinstance(item, Fail) else None
        pieces = [pcm[i : i + self.chunk] for i in range(0, len(pcm), self.chunk)]
        for i, piece in enumerate(pieces):
            if cut is not None and i >= cut:
                break
            if i and self.stream_delay and not await self._pause(conn, self.stream_delay):
                self._gone()
                return False
            for message in frame(piece, i):
                await conn.send(message)
        if cut is not None:
            conn.transport.abort()
            return False
        return True


class CosyVoiceServer(_WSBase):
    """DashScope CosyVoice duplex WebSocket stand-in (see the module docstring)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        #: every run-task and finish-task received, raw, in order
        self.tasks: list[str] = []
        self.finishes: list[str] = []
        #: connections accepted
        self.connections = 0

    async def handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        try:
            async for msg in conn:
                if not isinstance(msg, str) or json.loads(msg)["header"]["action"] != "run-task":
                    continue  # nothing else is expected between tasks
                self.tasks.append(msg)
                self.received.set()
                if not await self._task(conn, json.loads(msg)):
                    return
        except ConnectionClosed:
            self._gone()

    def _event(self, task_id: str, event: str, payload: Any = None, **header: Any) -> str:
        head = {"task_id": task_id, "event": event, "attributes": {}, **header}
        return json.dumps({"header": head, "payload": payload or {}})

    async def _task(self, conn: ServerConnection, run: dict[str, Any]) -> bool:
        """Answer one task; False when the connection is done."""
        task_id = run["header"]["task_id"]
        text = run["payload"]["input"]["text"]
        rate = int(run["payload"]["parameters"]["sample_rate"])
        item = self._next()
        if isinstance(item, Drop):
            conn.transport.abort()
            return False
        if isinstance(item, VendorError):
            failed = self._event(
                task_id, "task-failed", error_code=item.code, error_message=item.message
            )
            await conn.send(failed)
            return True
        await conn.send(self._event(task_id, "task-started"))
        finish = await conn.recv()
        self.finishes.append(finish)
        if not await self._failure_before_audio(conn, item):
            return False

        def sentence(kind: str) -> str:
            output = {"sentence": {"index": 0, "words": []}, "type": kind}
            return self._event(task_id, "result-generated", {"output": output})

        await conn.send(sentence("sentence-begin"))
        sent = await self._send_audio(
            conn,
            item,
            self.pcm(text, rate),
            lambda piece, i: [sentence("sentence-synthesis"), piece],
        )
        if not sent:
            return False
        await conn.send(sentence("sentence-end"))
        await conn.send(self._event(task_id, "task-finished", {"usage": {"characters": len(text)}}))
        self.completed += 1
        return True


class ElevenLabsServer(_WSBase):
    """ElevenLabs stream-input stand-in (see the module docstring)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        #: the text messages of each connection, raw, in order
        self.messages: list[list[str]] = []

    async def handler(self, conn: ServerConnection) -> None:
        received: list[str] = []
        self.messages.append(received)
        item = self._next()
        try:
            text = ""
            async for msg in conn:
                assert isinstance(msg, str)
                received.append(msg)
                piece = json.loads(msg)["text"]
                if piece == "":
                    break
                text += piece
            self.received.set()
            if isinstance(item, Drop):
                conn.transport.abort()
                return
            if isinstance(item, VendorError):
                await conn.send(
                    json.dumps({"message": item.message, "error": item.code, "code": 1008})
                )
                await conn.close(1008, item.message)
                return
            if not await self._failure_before_audio(conn, item):
                return
            fmt = Handshake(conn.request.path, {}).query["output_format"]
            rate = int(fmt.removeprefix("pcm_"))

            def message(piece: bytes, i: int) -> list[str]:
                chars = list(text) if i == 0 else []
                alignment = {"chars": chars, "charStartTimesMs": [0] * len(chars)}
                audio = base64.b64encode(piece).decode()
                return [json.dumps({"audio": audio, "isFinal": None, "alignment": alignment})]

            if not await self._send_audio(conn, item, self.pcm(text, rate), message):
                return
            await conn.send(json.dumps({"isFinal": True}))
            await conn.close()
            self.completed += 1
        except ConnectionClosed:
            self._gone()


VOICED_RMS = 500  # PCM16 units (about -36 dBFS)
ASR_BLOCK = 3200  # 100 ms of 16 kHz PCM16
SAID = ("hello world",)


@dataclass
class Say:
    """A Paraformer task's sentences, and how much quiet ends one."""

    sentences: tuple[str, ...] = SAID
    end_silence_ms: int = 500


@dataclass
class AsrTask:
    """One Paraformer task as the stand-in saw it."""

    #: the run-task as sent (raw text) and parsed
    raw: str
    run_task: dict[str, Any]
    audio: bytearray = field(default_factory=bytearray)
    #: the finish-task as sent (raw text), once it came
    finish_task: str | None = None
    #: the sentences of the result-generated events sent, in order
    results: list[dict[str, Any]] = field(default_factory=list)
    #: bytes of audio received when the first sentence_end was sent
    audio_at_first_final: int | None = None


class _Recognizer:
    """The loudness-driven sentences of one task (see the module docstring)."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.pending = bytearray()
        self.blocks = 0  # whole blocks heard
        self.index = 0  # the sentence being (or next to be) spoken
        self.voiced = 0  # speech blocks of the current sentence
        self.quiet_ms = 0
        self.begin_ms = self.end_ms = 0
        self.shown = ""

    def _sentence(self) -> str:
        s = self.say.sentences
        return s[self.index] if self.index < len(s) else "more"

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
        while len(self.pending) >= ASR_BLOCK:
            block = np.frombuffer(bytes(self.pending[:ASR_BLOCK]), "<i2").astype(np.float64)
            del self.pending[:ASR_BLOCK]
            self.blocks += 1
            if float(np.sqrt(np.mean(block**2))) > VOICED_RMS:
                if self.voiced == 0:
                    self.begin_ms = (self.blocks - 1) * 100
                self.voiced += 1
                self.quiet_ms = 0
                self.end_ms = self.blocks * 100
                s = self._sentence()
                text = " ".join(s.split()[: self.voiced]) if " " in s else s[: self.voiced]
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


class ParaformerServer(_WSBase):
    """DashScope Paraformer realtime ASR stand-in (see the module docstring)."""

    def __init__(self, token: str = "sk-test", **kw: Any) -> None:
        super().__init__(**kw)
        self.token = token
        #: where it is served (``ws://HOST:PORT/...``), for the test to set
        self.url = ""
        self.tasks: list[AsrTask] = []
        #: connections accepted
        self.connections = 0
        #: set when audio of a started task arrives
        self.heard = threading.Event()
        #: set when a connection ended, for whatever reason
        self.closed = threading.Event()

    def say(self, *sentences: str, end_silence_ms: int = 500) -> None:
        """The next task's sentences."""
        self.script.append(Say(sentences or SAID, end_silence_ms))

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        refused = super()._process_request(conn, request)
        if refused is None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return conn.respond(HTTPStatus.UNAUTHORIZED, "Invalid API-key provided.")
        return refused

    def _event(self, task: AsrTask, event: str, payload: Any = None, **header: Any) -> str:
        head = {"task_id": task.run_task["header"]["task_id"], "event": event, "attributes": {}}
        return json.dumps({"header": {**head, **header}, "payload": payload or {}})

    async def handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        try:
            task: AsrTask | None = None
            item: Any = None
            rec = _Recognizer(Say())
            async for msg in conn:
                if isinstance(msg, bytes):
                    if task is not None and await self._audio(conn, task, item, rec, msg):
                        continue
                    return
                if json.loads(msg)["header"]["action"] == "run-task":
                    task = AsrTask(msg, json.loads(msg))
                    self.tasks.append(task)
                    self.received.set()
                    item = self._next()
                    rec = _Recognizer(item if isinstance(item, Say) else Say())
                    if isinstance(item, VendorError):
                        failed = self._event(
                            task, "task-failed", error_code=item.code, error_message=item.message
                        )
                        await conn.send(failed)
                        await conn.close(1008, item.message)
                        return
                    if not (isinstance(item, Fail) and item.hang):
                        await conn.send(self._event(task, "task-started"))
                elif task is not None:  # finish-task
                    task.finish_task = msg
                    if (
                        isinstance(item, Fail)
                        and item.delay
                        and not await self._pause(conn, item.delay)
                    ):
                        self._gone()
                        return
                    if rec.voiced:
                        await self._results(conn, task, [rec.end()])
                    await conn.send(self._event(task, "task-finished", {"output": {}}))
                    self.completed += 1
                    task = None
        except ConnectionClosed:
            self._gone()
        finally:
            self.closed.set()

    async def _audio(
        self, conn: ServerConnection, task: AsrTask, item: Any, rec: _Recognizer, data: bytes
    ) -> bool:
        """Take a piece of audio; False when the connection was cut."""
        task.audio += data
        self.heard.set()
        cut = item.cut_after if isinstance(item, Fail) else None
        if cut is not None and len(task.audio) >= cut:
            conn.transport.abort()
            return False
        await self._results(conn, task, rec.feed(data))
        return True

    async def _results(self, conn: ServerConnection, task: AsrTask, sentences: list[Any]) -> None:
        for s in sentences:
            task.results.append(s)
            await conn.send(self._event(task, "result-generated", {"output": {"sentence": s}}))
            if s["sentence_end"] and task.audio_at_first_final is None:
                task.audio_at_first_final = len(task.audio)


@contextmanager
def running_ws_server(standin: Any) -> Iterator[str]:
    """Serve ``standin`` (a stand-in here, or any object with a ``handler`` and a
    ``_process_request``) on 127.0.0.1 in a thread of its own; yield ``"127.0.0.1:PORT"``.

    The socket is bound and listening before the server starts, so a client may connect at
    once (no readiness polling)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def main() -> None:
        async with serve(
            standin.handler,
            sock=sock,
            process_request=standin._process_request,
            compression=None,
            max_size=None,
        ):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the WebSocket stand-in did not start"
        yield f"127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        if thread.is_alive():
            raise RuntimeError("the WebSocket stand-in did not stop within 30 s")
        loop.close()
        sock.close()

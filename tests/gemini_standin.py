"""A Gemini Live stand-in: a real ``websockets`` server on a loopback port speaking the
BidiGenerateContent wire format. Same style as ``tests/standins.py``: a script of answers, a
record of what was received, ``threading.Event`` observations (it runs in a thread of its own)::

    gemini = GeminiServer()
    with running_gemini(gemini) as url:          # "ws://127.0.0.1:PORT/ws/...BidiGenerateContent"
        gemini.script.append(Answer(heard="Hi", said=["Hello", " there."]))
        ...
        gemini.connections[0].setup              # the setup message, raw text

Per connection: the first message must be ``{"setup": ...}``; the answer is ``setupComplete``
(or :attr:`GeminiServer.setup_close` closes the socket with that code and reason instead). Then
``realtime_input`` messages are recorded (``activityStart``, ``audio``, ``text``,
``activityEnd``); each ``activityEnd`` is answered by the next script item (default
:class:`Answer`), sent from a task of its own. An ``activityStart`` during an answer interrupts
it as Gemini does: the rest is not sent, ``interrupted`` then ``turnComplete`` are.

An :class:`Answer` is, in order: the ``inputTranscription`` of ``heard``; then, with AUDIO
answers (the setup's ``responseModalities``), per piece of ``said`` a ``modelTurn`` with an
``inlineData`` part of ``audio/pcm;rate=24000`` (a 440 Hz tone, :attr:`Answer.seconds` split
evenly over the pieces) followed by that piece as ``outputTranscription``; with TEXT answers, per
piece a ``modelTurn`` text part; then ``generationComplete`` and ``turnComplete``. Every server
message is a binary frame holding JSON, as Gemini sends them.

Other script items: :class:`GoAway` (``{"goAway": {"timeLeft": "..."}}`` instead of an
answer), ``Fail(cut_after=N)`` (the first N messages of the answer, then the TCP connection is
dropped), ``Fail(delay=s)`` (wait ``s`` before answering), ``Fail(hang=True)`` (never answer).
``refuse = STATUS`` answers every handshake with that HTTP status until set back to None;
``refuse_once`` the next one only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import numpy as np
from standins import Fail, tone
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from ws_standins import running_ws_server

from echokit_fast.audio import float_to_pcm16

__all__ = ["RATE", "Answer", "Connection", "GeminiServer", "GoAway", "running_gemini"]

#: Gemini's speech rate
RATE = 24000
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


@dataclass
class Answer:
    """One scripted answer (see the module docstring)."""

    heard: str = "What's the weather like in Paris?"
    said: list[str] = field(default_factory=lambda: ["It is sunny", " in Paris."])
    seconds: float = 0.6

    def pcm(self) -> bytes:
        """The s16le 24 kHz speech of the whole answer."""
        return float_to_pcm16(tone(self.seconds, RATE))

    def pieces(self) -> list[bytes]:
        """:meth:`pcm` split over the pieces of ``said`` (whole samples)."""
        samples = np.frombuffer(self.pcm(), dtype=np.int16)
        return [p.tobytes() for p in np.array_split(samples, len(self.said))]


@dataclass
class GoAway:
    time_left: str = "10s"


@dataclass
class Connection:
    """One connection the stand-in accepted."""

    path: str
    headers: dict[str, str]  # lower-case names
    setup: str = ""
    #: every realtime_input message after the setup, raw text, in order
    messages: list[str] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)

    def inputs(self) -> list[dict[str, Any]]:
        return [json.loads(m)["realtime_input"] for m in self.messages]

    def kinds(self) -> list[str]:
        """The key of each realtime_input, in order (``audio`` runs collapsed to one)."""
        kinds: list[str] = []
        for item in self.inputs():
            kind = next(iter(item))
            if not (kind == "audio" and kinds and kinds[-1] == "audio"):
                kinds.append(kind)
        return kinds

    def audio(self) -> bytes:
        """All the PCM received, in order."""
        return b"".join(base64.b64decode(i["audio"]["data"]) for i in self.inputs() if "audio" in i)


class GeminiServer:
    """The Gemini Live stand-in (see the module docstring)."""

    def __init__(self) -> None:
        self.script: deque[Any] = deque()
        self.connections: list[Connection] = []
        #: HTTP status for every handshake / the next one only (None: accept)
        self.refuse: int | None = None
        self.refuse_once: int | None = None
        #: (code, reason): close the socket instead of answering the setup
        self.setup_close: tuple[int, str] | None = None
        #: seconds between the messages of an answer
        self.stream_delay = 0.0
        #: answers sent completely
        self.completed = 0
        #: set when an activityEnd arrived
        self.asked = threading.Event()
        self._records: dict[ServerConnection, Connection] = {}

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self._records[conn] = record = Connection(request.path, headers)
        self.connections.append(record)
        status, self.refuse_once = self.refuse_once or self.refuse, None
        if status is not None:
            body = json.dumps({"error": {"code": status, "message": "API key not valid."}})
            return conn.respond(HTTPStatus(status), body)
        return None

    async def handler(self, conn: ServerConnection) -> None:
        record = self._records.pop(conn)
        answering: asyncio.Task[None] | None = None
        try:
            record.setup = str(await conn.recv())
            if self.setup_close is not None:
                await conn.close(*self.setup_close)
                return
            text_answers = (
                "TEXT"
                in json.loads(record.setup)["setup"]["generationConfig"]["responseModalities"]
            )
            await conn.send(b'{"setupComplete": {}}')
            async for message in conn:
                record.messages.append(str(message))
                item = json.loads(message)["realtime_input"]
                if "activityStart" in item and answering is not None and not answering.done():
                    answering.cancel()
                    await conn.send(_content(interrupted=True))
                    await conn.send(_content(turnComplete=True))
                if "activityEnd" in item:
                    self.asked.set()
                    script = self.script.popleft() if self.script else Answer()
                    answering = asyncio.create_task(self._answer(conn, script, text_answers))
        except ConnectionClosed:
            pass
        finally:
            if answering is not None:
                answering.cancel()
            record.closed.set()

    async def _answer(self, conn: ServerConnection, item: Any, text_answers: bool) -> None:
        if isinstance(item, GoAway):
            await conn.send(json.dumps({"goAway": {"timeLeft": item.time_left}}).encode())
            return
        if isinstance(item, Fail) and item.hang:
            return
        if isinstance(item, Fail) and item.delay:
            await asyncio.sleep(item.delay)
        answer = Answer() if isinstance(item, Fail) else item
        cut = item.cut_after if isinstance(item, Fail) else None
        messages = [_content(inputTranscription={"text": answer.heard})] if answer.heard else []
        for said, pcm in zip(answer.said, answer.pieces(), strict=True):
            if text_answers:
                messages.append(_content(modelTurn={"parts": [{"text": said}]}))
                continue
            data = base64.b64encode(pcm).decode()
            part = {"inlineData": {"mimeType": f"audio/pcm;rate={RATE}", "data": data}}
            messages.append(_content(modelTurn={"parts": [part]}))
            messages.append(_content(outputTranscription={"text": said}))
        messages += [_content(generationComplete=True), _content(turnComplete=True)]
        for i, message in enumerate(messages):
            if cut is not None and i >= cut:
                conn.transport.abort()
                return
            if i and self.stream_delay:
                await asyncio.sleep(self.stream_delay)
            await conn.send(message)
        self.completed += 1


def _content(**content: Any) -> bytes:
    return json.dumps({"serverContent": content}).encode()


@contextmanager
def running_gemini(standin: GeminiServer) -> Iterator[str]:
    """Serve ``standin`` on 127.0.0.1 (:func:`ws_standins.running_ws_server`); yield its
    endpoint URL."""
    with running_ws_server(standin) as addr:
        yield f"ws://{addr}{PATH}"

"""``[tts] platform = "cosyvoice"`` (alias ``CosyVoice``): Alibaba DashScope CosyVoice, streamed
over its duplex WebSocket.

The wire is the reference's: a connection to ``url`` with ``Authorization: Bearer <token>`` and
``X-DashScope-DataInspection: enable``; per segment a ``run-task`` (a fresh UUIDv4 task id,
model ``cosyvoice-v1`` / ``cosyvoice-v2``, ``format: pcm``, ``sample_rate: 16000``, the text in
its ``input``), the ``task-started`` event awaited, then ``finish-task``; every binary message
after it is s16le PCM at 16 kHz (resampled to the asked rate), ``result-generated`` events are
metadata, ``task-finished`` ends the segment and ``task-failed`` (``error_code``,
``error_message``) is the service's error; other events are ignored (the reference fails on
them).

Unlike the reference: a connection that ends before ``task-finished`` is a failure (the
reference takes it for the end of the audio), a failed or cancelled task's connection is closed
(never reused for another task), each message must come within ``read_timeout``, and a task is
tried again (on another connection) only when a kept connection turns out to be closed before
the task started, so no audio is ever spoken twice (the reference retries any failure once,
repeating what was already spoken). Connections are kept between segments, up to
:attr:`CosyVoiceSpeaker.MAX_IDLE`, as the reference keeps one per TTS worker.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import field_validator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from echokit_fast.backends import registry, ws
from echokit_fast.backends.base import BackendError, Pcm, Speaker
from echokit_fast.backends.schema import Section, WsUrl
from echokit_fast.backends.tts.speaker import NOTICE_REPORTED, NOTICES, PcmStream

__all__ = ["COSYVOICE_RATE", "DEFAULT_URL", "CosyVoiceSpeaker", "CosyVoiceTTS"]

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"
#: the rate asked of the service (the reference's)
COSYVOICE_RATE = 16000


class CosyVoiceTTS(Section):
    """``[tts] platform = "cosyvoice"`` (alias ``CosyVoice``): Alibaba DashScope."""

    platform: Literal["cosyvoice"] = "cosyvoice"
    token: str
    speaker: str | None = None
    version: Literal["V1", "V2"] = "V2"
    url: WsUrl = DEFAULT_URL

    @field_validator("url", mode="before")
    @classmethod
    def _empty_is_default(cls, url: object) -> object:
        return DEFAULT_URL if url == "" else url  # as in the reference

    @property
    def voice(self) -> str:
        """The speaker, or the reference's default for the version."""
        return self.speaker or ("longwan_v2" if self.version == "V2" else "longwan")

    @property
    def model(self) -> str:
        return "cosyvoice-v2" if self.version == "V2" else "cosyvoice-v1"


class _Stale(Exception):
    """A kept connection turned out to be closed before its task started."""


class CosyVoiceSpeaker:
    """DashScope CosyVoice over its WebSocket (see the module docstring)."""

    name = "cosyvoice"
    #: connections kept open for the next segments (the reference keeps one per worker, 4)
    MAX_IDLE = 4

    def __init__(
        self, cfg: CosyVoiceTTS, *, connect_timeout: float = 10.0, read_timeout: float = 60.0
    ) -> None:
        self.cfg = cfg
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.where = f"TTS cosyvoice {cfg.url}"
        self._headers = {
            "Authorization": f"Bearer {cfg.token}",
            "X-DashScope-DataInspection": "enable",
        }
        self._idle: list[ClientConnection] = []

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        conn = await self._start(text)
        stream = PcmStream(COSYVOICE_RATE, sample_rate)
        finished = False
        try:
            while True:
                msg = await ws.recv(conn, self.read_timeout)
                if isinstance(msg, bytes):
                    pcm = stream.feed(msg)
                    if len(pcm):
                        yield pcm
                    continue
                event, header = self._event(msg)
                if event == "task-finished":
                    break
                if event == "task-failed":
                    raise self._failed(header)
                if event != "result-generated":
                    log.debug("%s: event %r ignored", self.where, event)
            tail = stream.end()
            finished = True
            if len(tail):
                yield tail
        except ws.FAILURES as exc:
            raise ws.error(NOTICES, self.where, exc) from exc
        finally:
            if finished and conn.state is State.OPEN and len(self._idle) < self.MAX_IDLE:
                self._idle.append(conn)
            else:
                await conn.close()

    async def _start(self, text: str) -> ClientConnection:
        """A connection whose task for ``text`` has started and been sent ``finish-task``."""
        while True:
            conn, kept = await self._connection()
            try:
                await self._run_task(conn, text, kept)
                return conn
            except _Stale:
                await conn.close()
                log.info("%s: a kept connection was closed; retrying on a new one", self.where)
            except BaseException as exc:
                await conn.close()
                if isinstance(exc, ws.FAILURES):
                    raise ws.error(NOTICES, self.where, exc) from exc
                raise

    async def _connection(self) -> tuple[ClientConnection, bool]:
        """A kept open connection (True), else a new one (False)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.state is State.OPEN:
                return conn, True
        try:
            conn = await ws.connect(self.cfg.url, self._headers, timeout=self.connect_timeout)
        except ws.FAILURES as exc:
            raise ws.error(NOTICES, self.where, exc) from exc
        return conn, False

    async def _run_task(self, conn: ClientConnection, text: str, kept: bool) -> None:
        task_id = str(uuid.uuid4())
        header = {"action": "run-task", "task_id": task_id, "streaming": "duplex"}
        payload = {
            "task_group": "audio",
            "task": "tts",
            "function": "SpeechSynthesizer",
            "model": self.cfg.model,
            "parameters": {
                "text_type": "PlainText",
                "voice": self.cfg.voice,
                "format": "pcm",
                "sample_rate": COSYVOICE_RATE,
            },
            "input": {"text": text},
        }
        try:
            await conn.send(ws.dumps({"header": header, "payload": payload}))
            while True:
                msg = await ws.recv(conn, self.read_timeout)
                if isinstance(msg, str):
                    break  # the reference skips binary messages before the task starts
        except ConnectionClosed:
            if kept:
                raise _Stale() from None
            raise
        event, reply = self._event(msg)
        if event == "task-failed":
            raise self._failed(reply)
        if event != "task-started":
            raise NOTICES.error(
                f"{self.where}: {msg[:300]!r} before task-started", NOTICES.bad_answer
            )
        finish = {"header": {**header, "action": "finish-task"}, "payload": {"input": {}}}
        await conn.send(ws.dumps(finish))

    def _event(self, msg: str) -> tuple[Any, dict[str, Any]]:
        """``(header.event, header)`` of a text message; anything else is a bad answer."""
        try:
            header = json.loads(msg)["header"]
            return header["event"], header
        except (ValueError, KeyError, TypeError):
            raise NOTICES.error(
                f"{self.where}: bad event {msg[:300]!r}", NOTICES.bad_answer
            ) from None

    def _failed(self, header: dict[str, Any]) -> BackendError:
        code, message = header.get("error_code"), header.get("error_message")
        return NOTICES.error(f"{self.where}: task-failed {code}: {message}", NOTICE_REPORTED)


@registry.tts("cosyvoice", aliases=["CosyVoice"], config=CosyVoiceTTS)
def build(cfg: CosyVoiceTTS, needs: registry.Needs) -> Speaker:
    return CosyVoiceSpeaker(cfg)

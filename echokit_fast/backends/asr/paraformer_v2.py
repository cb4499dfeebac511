"""``[asr] platform = "paraformer_v2"`` (alias ``ParaformerV2``): Alibaba DashScope's realtime
speech recognition (Paraformer) over a WebSocket.

The wire format, as DashScope documents it and echokit_server speaks it: a WebSocket to ``url``
with ``Authorization: Bearer <paraformer_token>`` and ``X-DashScope-DataInspection: enable``;
the client sends ``run-task`` (model ``paraformer-realtime-v2``, ``format`` ``pcm``,
``sample_rate`` 16000, ``semantic_punctuation_enabled``) and waits for ``task-started``, then
streams the audio as binary messages (16 kHz mono PCM16) and ``finish-task`` after the last
of it; the server answers ``result-generated`` events (``payload.output.sentence``: ``text``
of the sentence in progress, ``sentence_end`` when it is over, ``end_time`` in ms;
``heartbeat`` ones are skipped) until ``task-finished``; ``task-failed`` (``header.error_code``,
``error_message``) is a failure. Events for another ``task_id`` are skipped. The JSON is
written as the reference's ``serde_json`` writes it (``backends/ws.py``: compact, keys sorted).

:class:`ParaformerTranscriber` is a
:class:`~echokit_fast.backends.base.StreamingTranscriber`:

* :meth:`~ParaformerTranscriber.stream` -- one task while the user speaks
  (:class:`ParaformerStream`, semantic punctuation on as the reference streams); the turn
  detector of :mod:`echokit_fast.turn.asr_stream` uses it for devices whose server ends the
  turn (EchoKit ``stream_asr``);
* :meth:`~ParaformerTranscriber.transcribe` -- one task for a recorded utterance, sent at once
  in 100 ms messages (semantic punctuation off, as the reference's Submit mode).

The transcript is every sentence of the task, joined (with a space between two that do not end
and begin with Chinese), Traditional -> Simplified (OpenCC ``tw2sp``, as the reference does for
its other recognizers). Each task has a WebSocket of its own, closed when the task ends.
``timeout_s`` bounds connecting with the task started, and the wait for ``task-finished``
after the end of the audio; a connection that fails (not a refused key) is tried 3 times
within it. Every failure is a BackendError whose notice says what happened (refused key,
failed task, timeout, connection cut, not reachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from echokit_fast import audio
from echokit_fast.backends import http, registry, ws
from echokit_fast.backends.asr.openai import RemoteTranscription
from echokit_fast.backends.base import BackendError, Heard, Pcm, StreamingTranscriber
from echokit_fast.backends.chinese import to_simplified
from echokit_fast.backends.schema import Section, WsUrl

__all__ = ["DEFAULT_URL", "ParaformerStream", "ParaformerTranscriber", "ParaformerV2ASR"]

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"
MODEL = "paraformer-realtime-v2"
RATE = 16000
#: bytes per binary message of a recorded utterance (100 ms)
CHUNK = 3200
CONNECT_ATTEMPTS = 3
NOTICES = http.Notices(
    "The speech recognizer", "asr", cut="The speech recognizer's connection was cut off."
)
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")


class ParaformerV2ASR(Section):
    """``[asr] platform = "paraformer_v2"`` (alias ``ParaformerV2``): DashScope realtime ASR."""

    platform: Literal["paraformer_v2"] = "paraformer_v2"
    paraformer_token: str
    url: WsUrl = DEFAULT_URL
    # echokit-fast's own (README, Limits): each wait on DashScope, in seconds -- connected with
    # the task started; task-finished after the end of the audio
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("url", mode="before")
    @classmethod
    def _empty_is_default(cls, url: object) -> object:
        return DEFAULT_URL if url == "" else url  # as in the reference


def join_sentences(sentences: list[str]) -> str:
    """Sentences as one text: a space between two unless one side is Chinese."""
    out = ""
    for s in (s.strip() for s in sentences):
        if out and s and not (_CJK.match(out[-1]) or _CJK.match(s[0])):
            out += " "
        out += s
    return out


def _header(action: str, task_id: str) -> dict[str, str]:
    return {"action": action, "task_id": task_id, "streaming": "duplex"}


class ParaformerStream:
    """One recognition task on a WebSocket of its own (an
    :class:`~echokit_fast.backends.base.AsrStream`); results carry the whole transcript so
    far. Made in the running event loop: it connects at once, audio sent before the task has
    started is queued."""

    def __init__(self, cfg: ParaformerV2ASR, *, semantic_punctuation: bool) -> None:
        self.cfg = cfg
        self.task_id = str(uuid.uuid4())
        self._semantic = semantic_punctuation
        self._audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._results: asyncio.Queue[Heard | BackendError | None] = asyncio.Queue()
        self._done = False  # the last result was read
        self._error: BackendError | None = None  # the failure, once read
        self._finished = False
        self._closing = False  # the task is over: the connection is being closed
        self._sentences: list[str] = []
        self._expiry: asyncio.TimerHandle | None = None
        self._what = f"paraformer {cfg.url}"
        self._task = asyncio.create_task(self._run(), name="echokit-paraformer")

    # -- AsrStream ---------------------------------------------------------------------

    def send(self, pcm16: bytes) -> None:
        if not self._finished and pcm16:
            self._audio.put_nowait(pcm16)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._audio.put_nowait(None)

    async def result(self) -> Heard | None:
        if self._error is not None:
            raise self._error
        if self._done:
            return None
        item = await self._results.get()
        if isinstance(item, BackendError):
            self._error = item
            raise item
        self._done = item is None
        return item

    def close(self) -> None:
        self._finished = True
        if self._expiry is not None:
            self._expiry.cancel()
        if not self._closing:  # (else the connection is closing by itself: let it)
            self._task.cancel()

    # -- the task ----------------------------------------------------------------------

    def _fail(self, exc: BackendError) -> None:
        self._results.put_nowait(exc)

    def _unexpected(self, exc: Exception) -> BackendError:
        """``exc`` as the BackendError a reader gets (every failure ends the results)."""
        if isinstance(exc, BackendError):
            return exc
        log.error("%s: %r", self._what, exc, exc_info=exc)
        return NOTICES.error(f"{self._what}: {exc!r}", NOTICES.unreachable)

    def _expire(self) -> None:
        if not self._task.done():
            self._task.cancel()
            self._fail(
                NOTICES.error(
                    f"{self._what}: no task-finished within {self.cfg.timeout_s} s "
                    "after the end of the audio",
                    NOTICES.timeout,
                )
            )

    async def _run(self) -> None:
        try:
            conn = await asyncio.wait_for(self._start(), self.cfg.timeout_s)
        except TimeoutError:
            self._fail(
                NOTICES.error(
                    f"{self._what}: task not started within {self.cfg.timeout_s} s",
                    NOTICES.timeout,
                )
            )
            return
        except Exception as exc:
            self._fail(self._unexpected(exc))
            return
        sender = asyncio.create_task(self._send(conn), name="echokit-paraformer-send")
        try:
            await self._receive(conn)
        except Exception as exc:
            self._fail(self._unexpected(exc))
        else:
            self._results.put_nowait(None)
        finally:
            self._closing = True
            if self._expiry is not None:
                self._expiry.cancel()
            sender.cancel()
            with contextlib.suppress(Exception):
                await conn.close()

    async def _connect(self) -> ClientConnection:
        """A connection, tried :data:`CONNECT_ATTEMPTS` times unless the handshake is refused
        for good (a 4xx other than 408/429: the key ...)."""
        headers = {
            "Authorization": f"Bearer {self.cfg.paraformer_token}",
            "X-DashScope-DataInspection": "enable",
        }
        attempt = 1
        while True:
            try:
                return await ws.connect(self.cfg.url, headers, timeout=self.cfg.timeout_s)
            except ws.FAILURES as exc:
                refused = isinstance(exc, InvalidStatus) and not http.retryable(
                    exc.response.status_code
                )
                if refused or attempt == CONNECT_ATTEMPTS:
                    raise ws.error(NOTICES, f"{self._what} (attempt {attempt})", exc) from None
                log.info("%s: attempt %d: %r", self._what, attempt, exc)
                attempt += 1

    async def _start(self) -> ClientConnection:
        """Connected, ``run-task`` sent and ``task-started`` received."""
        conn = await self._connect()
        try:
            run_task = {
                "header": _header("run-task", self.task_id),
                "payload": {
                    "task_group": "audio",
                    "task": "asr",
                    "function": "recognition",
                    "model": MODEL,
                    "parameters": {
                        "format": "pcm",
                        "sample_rate": RATE,
                        "semantic_punctuation_enabled": self._semantic,
                    },
                    "input": {},
                },
            }
            await conn.send(ws.dumps(run_task))
            while True:
                event = await self._event(conn)
                if event is None:
                    continue
                name, _ = event
                if name == "task-started":
                    return conn
                raise NOTICES.error(f"{self._what}: {name} before task-started", NOTICES.bad_answer)
        except BaseException:
            conn.transport.abort()  # no task to end: nothing to wait for (a timeout may be due)
            raise

    async def _send(self, conn: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the receiver reports it
            while (data := await self._audio.get()) is not None:
                await conn.send(data)
            finish = {
                "header": _header("finish-task", self.task_id),
                "payload": {"task_group": "audio", "input": {}},
            }
            await conn.send(ws.dumps(finish))
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(self.cfg.timeout_s, self._expire)

    async def _receive(self, conn: ClientConnection) -> None:
        """Results into the queue until ``task-finished``."""
        while True:
            event = await self._event(conn)
            if event is None:
                continue
            name, msg = event
            if name == "task-finished":
                return
            if name != "result-generated":
                log.debug("paraformer: ignoring event %s", name)
                continue
            output = (msg.get("payload") or {}).get("output") or {}
            sentence = output.get("sentence") if isinstance(output, dict) else None
            if not isinstance(sentence, dict) or sentence.get("heartbeat"):
                continue
            text = to_simplified(str(sentence.get("text") or "").strip())
            final = bool(sentence.get("sentence_end"))
            end_ms = sentence.get("end_time")
            so_far = join_sentences([*self._sentences, text])
            if final:
                self._sentences.append(text)
            end_s = end_ms / 1000 if final and isinstance(end_ms, int | float) else None
            self._results.put_nowait(Heard(so_far, final, end_s))

    async def _event(self, conn: ClientConnection) -> tuple[str, dict[str, Any]] | None:
        """The next event of this task (None for a message to skip); ``task-failed`` and a
        closed connection raise."""
        try:
            raw = await conn.recv()
        except ConnectionClosed as exc:
            raise ws.error(NOTICES, f"{self._what}: closed mid-task", exc) from None
        if isinstance(raw, bytes):
            return None
        try:
            msg = json.loads(raw)
            header = msg["header"]
            name = str(header["event"])
        except (ValueError, KeyError, TypeError):
            raise NOTICES.error(
                f"{self._what}: not a DashScope event: {raw[:200]!r}",
                NOTICES.bad_answer,
            ) from None
        if header.get("task_id") != self.task_id:
            log.debug("paraformer: skipping an event of task %r", header.get("task_id"))
            return None
        if name == "task-failed":
            code = header.get("error_code") or "unknown error"
            raise NOTICES.error(
                f"{self._what}: task-failed {code}: {header.get('error_message')}",
                f"{NOTICES.subject} failed ({code}).",
            )
        return name, msg


class ParaformerTranscriber:
    """DashScope Paraformer realtime ASR (a
    :class:`~echokit_fast.backends.base.StreamingTranscriber`)."""

    def __init__(self, cfg: ParaformerV2ASR) -> None:
        self.cfg = cfg

    def stream(self) -> ParaformerStream:
        return ParaformerStream(self.cfg, semantic_punctuation=True)

    async def transcribe(self, audio_in: Pcm, *, sample_rate: int = 16000) -> str:
        """The text of ``audio_in`` ("" for no speech). Raises BackendError."""
        x = np.asarray(audio_in, dtype=np.float32).reshape(-1)
        if sample_rate != RATE:
            x = audio.resample(x, sample_rate, RATE)
        pcm = audio.float_to_pcm16(x)
        stream = ParaformerStream(self.cfg, semantic_punctuation=False)
        try:
            for i in range(0, len(pcm), CHUNK):
                stream.send(pcm[i : i + CHUNK])
            stream.finish()
            text = ""
            while (heard := await stream.result()) is not None:
                text = heard.text
            return text
        finally:
            stream.close()

    def start(self, audio_in: Pcm, *, sample_rate: int = 16000) -> RemoteTranscription:
        """Begin transcribing now (an asyncio task); ``result()`` later, or ``cancel()``."""
        return RemoteTranscription(self.transcribe(audio_in, sample_rate=sample_rate))


@registry.asr(
    "paraformer_v2", aliases=["ParaformerV2"], config=ParaformerV2ASR, untagged=["paraformer_token"]
)
def build(cfg: ParaformerV2ASR, needs: registry.Needs) -> StreamingTranscriber:
    return ParaformerTranscriber(cfg)

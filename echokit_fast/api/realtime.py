"""``WS /v1/realtime``: echokit_server's deprecated OpenAI-Realtime-like endpoint
(docs/protocol.md#the-realtime-endpoint), over the device pipeline's backends.

JSON text frames both ways, each an object tagged by ``type`` with the shapes of OpenAI's beta
Realtime API (what ``openai``'s ``client.beta.realtime.connect`` speaks); audio is PCM16 LE
mono 24 kHz, base64, both ways. Served for the pipeline layout only (any ``[asr]``, ``[llm]``
and ``[tts]`` platform); other layouts answer the upgrade with HTTP 404 saying why.

On connect: ``session.created`` (model ``gpt-4o-realtime-preview``, the TTS voice, pcm16
formats, temperature 0.8, server VAD) and ``conversation.created``. Client events:

* ``session.update``: merged into the session (``session.updated`` with the whole of it); a
  format other than ``pcm16`` or ``semantic_vad`` is refused with an ``error`` event and
  nothing changes. ``turn_detection`` ``null`` or ``{"type": "none"}`` turns the server VAD off.
* ``input_audio_buffer.append`` / ``.commit`` / ``.clear`` (``input_audio_buffer.cleared``).
  A commit answers ``input_audio_buffer.committed``, then, once the ``[asr]`` transcriber
  heard it (the audio resampled to 16 kHz), ``conversation.item.created`` and
  ``conversation.item.input_audio_transcription.completed``, then a response unless
  ``turn_detection.create_response`` is false (as the reference, also after a manual commit).
* ``conversation.item.create`` (``conversation.item.created``): a user message's text is what
  the next response answers; other items are acknowledged only.
* ``response.create`` (``error`` ``response_in_progress`` while one is running or due);
  ``response.cancel`` (the running response ends ``cancelled``, then
  ``conversation.interrupted``).

Server VAD (always available: the embedded Silero VAD, one stream of the app's shared
:class:`~echokit_fast.api.vad.RealtimeVad` batcher per connection, fed the input resampled to
16 kHz): ``threshold`` (0.5), ``silence_duration_ms`` (500: the silence that ends speech),
``prefix_padding_ms`` (300: audio kept before the detected start). Before speech the buffer
keeps only the last ``prefix_padding_ms`` of audio the VAD has seen;
``input_audio_buffer.speech_started`` (``audio_start_ms``: where the committed audio will begin,
the padding included) and ``.speech_stopped`` (``audio_end_ms``: the end of speech plus the
silence duration) are in milliseconds of the connection's input audio, and the commit holds
exactly the audio between them. A start while a response runs cancels it unless
``interrupt_response`` is false.

A response: ``response.created``, ``response.output_item.added``, ``response.content_part.added``
(text, index 0; audio, index 1, with the audio modality), ``response.text.delta`` as the LLM
streams, ``response.audio.delta`` (the TTS of each segment at 24 kHz, at most 0.5 s per
event), ``response.text.done``, ``response.content_part.done`` (, ``response.audio.done`` and
the audio part's), ``response.output_item.done``, ``response.done`` (status ``completed``,
``cancelled`` or ``failed``). A backend failure is an ``error`` event (``asr_failed``,
``llm_failed``, ``tts_failed``), and for a response ``response.done`` with status ``failed``;
the connection goes on. Each connection has its own conversation (history).

Bad input never ends the connection: unparsable JSON, an unknown or unsupported event type,
an invalid field, a binary frame or an event over ``[limits] max_realtime_event_bytes`` is an
``error`` event (OpenAI's shape: ``type``, ``code``, ``message``, ``param``, ``event_id``).
The input buffer holds at most ``[limits] max_audio_s`` of audio (an append beyond it is
refused with ``input_audio_buffer_full``). Differences from the reference:
docs/compatibility.md#the-realtime-endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from echokit_fast.api.vad import WINDOW_BYTES, RealtimeVad, VadListener
from echokit_fast.audio import Resampler, float_to_pcm16, pcm16_to_float, resample
from echokit_fast.backends.base import Backends, Conversation, Pcm, SpeakNow
from echokit_fast.backends.vad.silero import BatchedStream, StepResult
from echokit_fast.conversation.pipeline import ReplyPipeline, TurnFailed, aclosing_iter
from echokit_fast.conversation.session import Settings, cut_text
from echokit_fast.conversation.splitter import SegmentGrouper
from echokit_fast.conversation.trace import TurnTrace
from echokit_fast.server.state import AppState

__all__ = ["RealtimeConnection", "routes"]

log = logging.getLogger("echokit_fast.realtime")

#: the wire's audio rate, both ways
RATE = 24000
#: the rate the transcriber and the VAD get
ASR_RATE = 16000
#: 16 kHz samples per VAD window
WINDOW = WINDOW_BYTES // 2
MODEL = "gpt-4o-realtime-preview"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
#: the server VAD's parameters when the client does not set them (OpenAI's defaults)
SERVER_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}
#: the most audio one ``response.audio.delta`` carries: 0.5 s, the reference's pieces
DELTA_SAMPLES = RATE // 2
#: events queued for a slow client before a response waits for it to read
QUEUE_HIGH = 64
#: the longest prefix padding or silence duration a client may ask for
MAX_VAD_MS = 10_000


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _ms(samples: int) -> int:
    return samples * 1000 // RATE


# --- client events -----------------------------------------------------------------------


class _Lax(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TurnDetection(_Lax):
    type: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=MAX_VAD_MS)
    silence_duration_ms: int | None = Field(default=None, ge=0, le=MAX_VAD_MS)
    create_response: bool | None = None
    interrupt_response: bool | None = None


Modality = Literal["text", "audio"]


class SessionPatch(_Lax):
    modalities: list[Modality] | None = None
    instructions: str | None = None
    voice: str | None = None
    input_audio_format: str | None = None
    output_audio_format: str | None = None
    input_audio_transcription: dict[str, Any] | None = None
    turn_detection: TurnDetection | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    max_response_output_tokens: int | Literal["inf"] | None = None


#: session fields a ``null`` clears (a ``null`` for any other one is ignored)
NULLABLE = ("input_audio_transcription", "turn_detection", "max_response_output_tokens")


class Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    transcript: str | None = None


class Item(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    type: Literal["message", "function_call", "function_call_output"] = "message"
    role: Literal["user", "assistant", "system"] | None = None
    content: list[Part] | None = None


class Event(_Lax):
    event_id: str | None = None


class SessionUpdate(Event):
    session: SessionPatch


class Append(Event):
    audio: str


class ItemCreate(Event):
    previous_item_id: str | None = None
    item: Item


class ResponseParams(_Lax):
    modalities: list[Modality] | None = None


class ResponseCreate(Event):
    response: ResponseParams | None = None


#: OpenAI client events this server does not implement (answered with an error event)
UNSUPPORTED = (
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
)


# --- pieces of a response ------------------------------------------------------------------


class _NoSpeech:
    """The speaker of a text-only response."""

    async def speak(self, text: str, *, sample_rate: int = ASR_RATE) -> AsyncIterator[Pcm]:
        for chunk in ():
            yield chunk


class _Teed:
    """A conversation whose text deltas also go to ``on_text`` as they stream."""

    def __init__(self, inner: Conversation, on_text: Callable[[str], None]) -> None:
        self.inner = inner
        self.on_text = on_text

    async def reply(self, user_text: str) -> AsyncIterator[str | SpeakNow]:
        async with aclosing_iter(self.inner.reply(user_text)) as stream:
            async for item in stream:
                if isinstance(item, str) and item:
                    self.on_text(item)
                yield item

    def reset(self) -> None:
        self.inner.reset()


class _AudioDeltas:
    """The reply pipeline's output for one response: the TTS audio as
    ``response.audio.delta`` events."""

    def __init__(self, conn: RealtimeConnection, response_id: str, item_id: str) -> None:
        self.conn = conn
        self.ids = {"response_id": response_id, "item_id": item_id}

    async def segment_start(self, text: str) -> None:
        return None

    async def audio(self, pcm: Pcm) -> int:
        n = 0
        for i in range(0, len(pcm), DELTA_SAMPLES):
            delta = base64.b64encode(float_to_pcm16(pcm[i : i + DELTA_SAMPLES])).decode("ascii")
            self.conn.send(
                "response.audio.delta", **self.ids, output_index=0, content_index=1, delta=delta
            )
            n += 1
        await self.conn.flow()
        return n

    async def segment_end(self) -> int:
        return 0


@dataclass(eq=False)
class _Job:
    """Work done in order, one at a time: a committed utterance to transcribe (``audio``),
    then, if ``respond`` (still) holds, a response."""

    respond: bool
    audio: bytes | None = None
    item_id: str = ""
    modalities: list[str] | None = None
    #: the response has begun (cancelling it means cancelling the job's task)
    responding: bool = False


class _Vad(VadListener):
    """One connection's server VAD: a stream of the shared batcher fed the input audio from
    ``origin`` (a sample index of the connection's 24 kHz input) on, resampled to 16 kHz."""

    def __init__(self, stream: BatchedStream, conn: RealtimeConnection, origin: int) -> None:
        super().__init__(stream)
        self.conn = conn
        self.origin = origin
        self.resampler = Resampler(RATE, ASR_RATE)

    def at(self, sample16: int) -> int:
        """The input sample (24 kHz) of the stream's 16 kHz sample ``sample16``."""
        return self.origin + sample16 * 3 // 2

    async def on_result(self, result: StepResult) -> None:
        self.conn.vad_result(self, result)

    async def on_failure(self, message: str) -> None:
        self.conn.error(f"the VAD failed: {message}", code="vad_failed", type_="server_error")


# --- the connection ------------------------------------------------------------------------


class RealtimeConnection:
    """One ``/v1/realtime`` client (see the module docstring).

    Tasks: the handler's own (reading and handling client events), a writer (the one that
    sends, in queue order), a worker (the jobs: transcriptions and responses, in order). The
    VAD's results arrive in the shared VAD task and are handled at once, without waiting.
    """

    def __init__(
        self, ws: WebSocket, state: AppState, backends: Backends, vad: RealtimeVad
    ) -> None:
        self.ws = ws
        self.state = state
        self.backends = backends
        self.vad_service = vad
        limits = state.config.limits
        self.max_audio_s = limits.max_audio_s
        self.max_buffer = int(limits.max_audio_s * RATE) * 2
        self.max_event = limits.max_realtime_event_bytes
        self.max_text = limits.max_text_bytes
        self.id = _id("sess")
        self.session = self._initial_session()
        self.conversation = backends.conversation_factory(f"realtime/{self.id}")
        self.handlers: dict[str, tuple[type[Event], Callable[[Any], Any]]] = {
            "session.update": (SessionUpdate, self.session_update),
            "input_audio_buffer.append": (Append, self.append),
            "input_audio_buffer.commit": (Event, self.commit),
            "input_audio_buffer.clear": (Event, self.clear),
            "conversation.item.create": (ItemCreate, self.item_create),
            "response.create": (ResponseCreate, self.response_create),
            "response.cancel": (Event, self.response_cancel),
        }
        # outgoing events (JSON text), sent by the writer
        self._out: asyncio.Queue[str] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self.gone = False
        # the input audio buffer: 24 kHz PCM16; ``buf_start`` is the input sample of its first
        # byte pair, ``samples`` the input samples appended since the connection began
        self.buf = bytearray()
        self.buf_start = 0
        self.samples = 0
        self.vad: _Vad | None = None
        #: the item of the speech in progress (server VAD), None between utterances
        self.speech_item: str | None = None
        # the conversation: user text not answered yet, the jobs
        self.pending: list[str] = []
        self.jobs: deque[_Job] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._current: asyncio.Task[None] | None = None
        self._cancel_reason = "client_cancelled"
        self.turns = 0

    def _initial_session(self) -> dict[str, Any]:
        cfg = self.state.config
        prompts = getattr(cfg.llm, "sys_prompts", None) or []
        if prompts and prompts[0].role == "system":
            instructions = prompts[0].content
        else:
            instructions = getattr(cfg.llm, "instructions", None) or DEFAULT_INSTRUCTIONS
        voice = getattr(cfg.tts, "voice", None) or getattr(cfg.tts, "speaker", None) or "default"
        return {
            "id": self.id,
            "object": "realtime.session",
            "model": MODEL,
            "modalities": ["text", "audio"],
            "instructions": instructions,
            "voice": voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": None,
            "turn_detection": dict(SERVER_VAD),
            "tools": [],
            "tool_choice": "auto",
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
        }

    # -- sending --------------------------------------------------------------------------

    def send(self, type_: str, **fields: Any) -> None:
        """Queue a server event (dropped once the client is gone)."""
        if not self.gone:
            event = {"type": type_, "event_id": _id("event"), **fields}
            self._out.put_nowait(json.dumps(event, ensure_ascii=False))

    def error(
        self,
        message: str,
        *,
        code: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        error = {"type": type_, "code": code, "message": message, "param": param}
        self.send("error", error={**error, "event_id": event_id})

    async def flow(self) -> None:
        """Wait while more than ``QUEUE_HIGH`` events wait for a slow client."""
        while self._out.qsize() > QUEUE_HIGH and not self.gone:
            self._room.clear()
            await self._room.wait()

    async def _write(self) -> None:
        try:
            while True:
                text = await self._out.get()
                await self.ws.send_text(text)
                if self._out.qsize() <= QUEUE_HIGH // 2:
                    self._room.set()
        except Exception:  # the client went away
            self.gone = True
            self._room.set()

    # -- the connection's life ------------------------------------------------------------

    async def serve(self) -> None:
        """Serve the (accepted) connection until the client leaves."""
        writer = asyncio.create_task(self._write(), name=f"echokit-realtime-writer-{self.id}")
        try:
            await self._restart_vad()
            self.send("session.created", session=self.session)
            conversation = {"id": _id("conv"), "object": "realtime.conversation"}
            self.send("conversation.created", conversation=conversation)
            await self._read()
        finally:
            self.gone = True
            tasks = [t for t in (self._current, self._worker) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.vad is not None:
                await self.vad_service.close(self.vad)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self.error(
                    "binary frames are not accepted: events are JSON text", code="invalid_event"
                )
                continue
            size = len(text) if text.isascii() else len(text.encode("utf-8"))
            if size > self.max_event:
                self.error(
                    f"an event of {size} bytes exceeds the server's limit of {self.max_event} "
                    "(max_realtime_event_bytes in the [limits] table of its config file)",
                    code="event_too_large",
                )
                continue
            await self._handle(text)

    async def _handle(self, text: str) -> None:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            self.error(f"the event is not valid JSON: {exc}", code="invalid_json")
            return
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            self.error("an event is a JSON object with a string 'type'", code="invalid_event")
            return
        kind = obj["type"]
        event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
        entry = self.handlers.get(kind)
        if entry is None:
            what = "is not supported by this server" if kind in UNSUPPORTED else "is unknown"
            self.error(
                f"the event type {kind!r} {what}; this server handles: {', '.join(self.handlers)}",
                code="unsupported_event" if kind in UNSUPPORTED else "invalid_value",
                param="type",
                event_id=event_id,
            )
            return
        model, handle = entry
        try:
            event = model.model_validate(obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            self.error(
                f"invalid {kind}: {param}: {first['msg']}",
                code="invalid_value",
                param=param,
                event_id=event_id,
            )
            return
        await handle(event)

    # -- client events --------------------------------------------------------------------

    async def session_update(self, event: SessionUpdate) -> None:
        patch = event.session
        given = patch.model_fields_set
        for key in ("input_audio_format", "output_audio_format"):
            value = getattr(patch, key)
            if value is not None and value != "pcm16":
                which = "input" if key.startswith("input") else "output"
                self.error(
                    f"Only PCM16 {which} audio format is supported",
                    code="unsupported_audio_format",
                    param=key,
                    event_id=event.event_id,
                )
                return
        detection = patch.turn_detection
        if detection is not None and detection.type == "semantic_vad":
            self.error(
                "Semantic VAD turn detection is not supported",
                code="unsupported_turn_detection",
                param="turn_detection.type",
                event_id=event.event_id,
            )
            return
        vad_before = self._vad_params()
        for key in given:
            value = getattr(patch, key)
            if key == "turn_detection":
                if detection is None or detection.type == "none":
                    value = None
                else:
                    value = {**SERVER_VAD, **detection.model_dump(exclude_none=True)}
            elif value is None and key not in NULLABLE:
                continue
            self.session[key] = value
        if self._vad_params() != vad_before:
            await self._restart_vad()
        self.send("session.updated", session=self.session)

    async def append(self, event: Append) -> None:
        try:
            pcm = base64.b64decode(event.audio, validate=True)
        except (binascii.Error, ValueError):
            self.error(
                "audio is not valid base64",
                code="invalid_value",
                param="audio",
                event_id=event.event_id,
            )
            return
        if len(pcm) % 2:
            self.error(
                "audio must be whole 16-bit samples (an even number of bytes)",
                code="invalid_value",
                param="audio",
                event_id=event.event_id,
            )
            return
        if len(self.buf) + len(pcm) > self.max_buffer:
            self.error(
                f"the input audio buffer would exceed {self.max_audio_s:g} s (max_audio_s in "
                "the [limits] table of the server's config file): commit or clear it",
                code="input_audio_buffer_full",
                event_id=event.event_id,
            )
            return
        self.buf += pcm
        self.samples += len(pcm) // 2
        vad = self.vad
        if vad is not None and vad.failed:
            await self._restart_vad()
            vad = self.vad
        if vad is not None:
            pcm16k = vad.resampler.process(pcm16_to_float(pcm))
            await self.vad_service.push(vad, float_to_pcm16(pcm16k))

    async def commit(self, event: Event) -> None:
        if not self.buf:
            self.error(
                "the input audio buffer is empty",
                code="input_audio_buffer_commit_empty",
                event_id=event.event_id,
            )
            return
        item_id, self.speech_item = self.speech_item or _id("item"), None
        self._commit(item_id, upto=self.samples)

    async def clear(self, event: Event) -> None:
        self.buf.clear()
        self.buf_start = self.samples
        if self.vad is not None:
            await self._restart_vad()
        self.send("input_audio_buffer.cleared")

    async def item_create(self, event: ItemCreate) -> None:
        item = event.item
        if item.type == "message" and item.role == "user":
            parts = item.content or []
            text = " ".join(t for p in parts if (t := p.text or p.transcript))
            size = len(text.encode("utf-8"))
            if size > self.max_text:
                self.error(
                    f"the message's text of {size} bytes exceeds the server's limit of "
                    f"{self.max_text} (max_text_bytes in the [limits] table of its config file)",
                    code="text_too_long",
                    param="item.content",
                    event_id=event.event_id,
                )
                return
            self._add_pending(text)
        else:
            log.debug("realtime %s: %s item not given to the LLM", self.id, item.role or item.type)
        echo = item.model_dump(exclude_none=True)
        echo["id"] = item.id or _id("item")
        echo["object"] = "realtime.item"
        echo.setdefault("status", "completed")
        self.send("conversation.item.created", previous_item_id=event.previous_item_id, item=echo)

    async def response_create(self, event: ResponseCreate) -> None:
        if any(job.respond for job in self.jobs):
            self.error(
                "A response is already being generated",
                code="response_in_progress",
                event_id=event.event_id,
            )
            return
        modalities = event.response.modalities if event.response is not None else None
        self._enqueue(_Job(respond=True, modalities=modalities))

    async def response_cancel(self, event: Event) -> None:
        cancelled = self._interrupt("client_cancelled")
        if cancelled is not None:  # its response.done first
            await asyncio.wait({cancelled})
        self.send("conversation.interrupted")

    # -- the server VAD -------------------------------------------------------------------

    def _vad_params(self) -> tuple[float, float] | None:
        detection = self.session["turn_detection"]
        if detection is None:
            return None
        return float(detection["threshold"]), float(detection["silence_duration_ms"])

    async def _restart_vad(self) -> None:
        """A fresh VAD stream from the current input sample on (none when the server VAD is
        off); the speech in progress, if any, is forgotten."""
        old, self.vad = self.vad, None
        self.speech_item = None
        if old is not None:
            await self.vad_service.close(old)
        params = self._vad_params()
        if params is None:
            return
        threshold, silence_ms = params
        origin = self.samples
        try:
            self.vad = await self.vad_service.open(
                lambda stream: _Vad(stream, self, origin),
                threshold=threshold,
                neg_threshold=max(threshold - 0.15, 0.01),
                min_silence_duration_ms=silence_ms,
                speech_pad_ms=0,
            )
        except Exception as exc:
            log.exception("realtime %s: the VAD model cannot be loaded", self.id)
            self.session["turn_detection"] = None
            self.error(
                f"the server VAD is unavailable (turn detection is off): {exc}",
                code="vad_failed",
                type_="server_error",
            )

    def vad_result(self, vad: _Vad, result: StepResult) -> None:
        """One VAD step's windows of ``vad``'s stream (called in the VAD task: no waiting)."""
        if vad is not self.vad:
            return
        for event in result.events:
            if "start" in event:
                self._speech_started(vad.at(event["start"]))
            else:
                self._speech_stopped(vad.at(event["end"]))
        if self.speech_item is None:  # between utterances: keep the padding only
            seen = vad.at((vad.done + len(result.probabilities)) * WINDOW)
            self._trim(seen - self._pad())

    def _pad(self) -> int:
        detection = self.session["turn_detection"] or SERVER_VAD
        return int(detection["prefix_padding_ms"]) * RATE // 1000

    def _trim(self, keep_from: int) -> None:
        """Drop the buffer's audio before input sample ``keep_from``."""
        n = min(keep_from - self.buf_start, len(self.buf) // 2)
        if n > 0:
            del self.buf[: 2 * n]
            self.buf_start += n

    def _speech_started(self, start: int) -> None:
        begin = max(self.buf_start, start - self._pad())
        self._trim(begin)
        self.speech_item = _id("item")
        self.send(
            "input_audio_buffer.speech_started",
            audio_start_ms=_ms(begin),
            item_id=self.speech_item,
        )
        detection = self.session["turn_detection"] or SERVER_VAD
        if detection.get("interrupt_response", True):
            self._interrupt("turn_detected")

    def _speech_stopped(self, end: int) -> None:
        item_id, self.speech_item = self.speech_item, None
        if item_id is None:
            return
        detection = self.session["turn_detection"] or SERVER_VAD
        stop = min(self.samples, end + int(detection["silence_duration_ms"]) * RATE // 1000)
        self.send("input_audio_buffer.speech_stopped", audio_end_ms=_ms(stop), item_id=item_id)
        self._commit(item_id, upto=stop)

    # -- turns ----------------------------------------------------------------------------

    def _commit(self, item_id: str, *, upto: int) -> None:
        """The buffer up to input sample ``upto`` becomes the item ``item_id``."""
        n = max(0, min(upto - self.buf_start, len(self.buf) // 2))
        audio = bytes(self.buf[: 2 * n])
        del self.buf[: 2 * n]
        self.buf_start += n
        self.send("input_audio_buffer.committed", previous_item_id=None, item_id=item_id)
        detection = self.session["turn_detection"] or {}
        respond = detection.get("create_response", True)
        self._enqueue(_Job(respond=respond, audio=audio, item_id=item_id))

    def _add_pending(self, text: str) -> None:
        """``text`` is for the next response; the oldest pending text goes when they would
        exceed ``max_text_bytes`` together."""
        if not text.strip():
            return
        self.pending.append(text)
        while len(self.pending) > 1 and len("\n".join(self.pending).encode()) > self.max_text:
            self.pending.pop(0)
            log.warning("realtime %s: unanswered input dropped (max_text_bytes)", self.id)

    def _interrupt(self, reason: str) -> asyncio.Task[None] | None:
        """No response is due any more; the running one, if any, is cancelled (its task is
        returned)."""
        for job in self.jobs:
            job.respond = False
        running = self.jobs[0] if self.jobs else None
        task = self._current
        if running is None or not running.responding or task is None:
            return None
        self._cancel_reason = reason
        task.cancel()
        return task

    def _enqueue(self, job: _Job) -> None:
        self.jobs.append(job)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"echokit-realtime-{self.id}")

    async def _work(self) -> None:
        try:
            while self.jobs:
                job = self.jobs[0]
                task = self._current = asyncio.create_task(self._run(job))
                await asyncio.wait({task})
                self.jobs.popleft()
                if not task.cancelled() and task.exception() is not None:  # a bug
                    log.error("realtime %s: a job failed", self.id, exc_info=task.exception())
        finally:
            self._worker = self._current = None

    async def _run(self, job: _Job) -> None:
        if job.audio is not None and not await self._transcribe(job):
            return
        if job.respond:
            job.responding = True
            await self._respond(job.modalities or self.session["modalities"])

    async def _transcribe(self, job: _Job) -> bool:
        """ASR of a committed utterance and its events; True when it heard something."""
        item: dict[str, Any] = {
            "id": job.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
        }
        try:
            text = ""
            if job.audio:
                pcm = resample(pcm16_to_float(job.audio), RATE, ASR_RATE)
                text = await self.backends.transcriber.transcribe(pcm, sample_rate=ASR_RATE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = TurnFailed.of(exc, "asr")
            item["content"] = [{"type": "input_audio", "transcript": None}]
            self.send("conversation.item.created", previous_item_id=None, item=item)
            error = {"type": "server_error", "code": "asr_failed", "message": failure.notice}
            self.send(
                "conversation.item.input_audio_transcription.failed",
                item_id=job.item_id,
                content_index=0,
                error={**error, "param": None},
            )
            self.error(failure.notice, code="asr_failed", type_="server_error")
            return False
        text = cut_text(text.strip(), self.max_text)
        item["content"] = [{"type": "input_audio", "transcript": text}]
        self.send("conversation.item.created", previous_item_id=None, item=item)
        self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=job.item_id,
            content_index=0,
            transcript=text,
        )
        self._add_pending(text)
        return bool(text)

    async def _respond(self, modalities: list[str]) -> None:
        text, self.pending = "\n".join(self.pending), []
        if not text:
            self.error(
                "there is no user input to respond to: create a user message item or commit "
                "audio first",
                code="no_user_input",
            )
            return
        self.turns += 1
        trace = TurnTrace(f"realtime/{self.id}", self.turns)
        rid, iid = _id("resp"), _id("item")
        ids = {"response_id": rid, "item_id": iid, "output_index": 0}
        audio = "audio" in modalities
        self.send("response.created", response=_response(rid, "in_progress", None, []))
        item = {
            "id": iid,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self.send("response.output_item.added", response_id=rid, output_index=0, item=item)
        self.send("response.content_part.added", **ids, content_index=0, part=_text(""))
        if audio:
            self.send("response.content_part.added", **ids, content_index=1, part=_audio(""))
        texts: list[str] = []

        def on_text(delta: str) -> None:
            texts.append(delta)
            self.send("response.text.delta", **ids, content_index=0, delta=delta)

        settings = self.state.device_settings or Settings()
        pipeline = ReplyPipeline(
            conversation=_Teed(self.conversation, on_text),
            speaker=self.backends.speaker if audio else _NoSpeech(),
            segmenter_factory=self.state.segmenter or SegmentGrouper,
            out=_AudioDeltas(self, rid, iid),
            trace=trace,
            max_parallel=settings.tts_parallel,
            sample_rate=RATE,
        )
        status, details = "cancelled", None
        try:
            trace.detail["segments"] = await pipeline.run(text)
            status = "completed"
        except Exception as exc:  # a backend's TurnFailed, or a bug (then logged)
            failure = TurnFailed.of(exc, "server")
            status = "failed"
            trace.detail["failed"] = failure.stage
            code = f"{failure.stage}_failed"
            error = {"type": "server_error", "code": code, "message": failure.notice}
            details = {"type": "failed", "error": error}
            self.error(failure.notice, code=code, type_="server_error")
        finally:
            if status == "cancelled":
                details = {"type": "cancelled", "reason": self._cancel_reason}
            trace.outcome = {"completed": "ok", "failed": "error"}.get(status, status)
            full = "".join(texts)
            self.send("response.text.done", **ids, content_index=0, text=full)
            self.send("response.content_part.done", **ids, content_index=0, part=_text(full))
            content = [_text(full)]
            if audio:
                self.send("response.audio.done", **ids, content_index=1)
                self.send("response.content_part.done", **ids, content_index=1, part=_audio(full))
                content.append(_audio(full))
            item = {**item, "status": "completed" if status == "completed" else "incomplete"}
            item["content"] = content
            self.send("response.output_item.done", response_id=rid, output_index=0, item=item)
            self.send("response.done", response=_response(rid, status, details, [item]))
            self._cancel_reason = "client_cancelled"
            self.state.turns.add(trace.finish())


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _audio(transcript: str) -> dict[str, Any]:
    return {"type": "audio", "transcript": transcript}


def _response(
    rid: str, status: str, details: dict[str, Any] | None, output: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "realtime.response",
        "status": status,
        "status_details": details,
        "output": output,
        "usage": None,
    }


# --- the route ---------------------------------------------------------------------------


def routes(state: AppState) -> list[BaseRoute]:
    async def realtime(ws: WebSocket) -> None:
        layout = state.config.layout
        if layout != "pipeline":
            message = (
                "/v1/realtime is served for the pipeline layout ([asr], [llm] and [tts]); this "
                f"server runs the {layout} layout"
            )
            await ws.send_denial_response(PlainTextResponse(message, status_code=404))
            return
        # browsers name a subprotocol (OpenAI's web clients offer "realtime"): echo it
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        await state.wait_ready()
        backends, vad = state.backends, state.realtime_vad
        if backends is None or vad is None:
            with contextlib.suppress(Exception):
                await ws.close(code=1011, reason="the server's backends are not available")
            return
        await RealtimeConnection(ws, state, backends, vad).serve()

    return [WebSocketRoute("/v1/realtime", realtime)]

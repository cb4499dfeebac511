"""silero_vad_server's two routes, on the batched Silero VAD (:mod:`..backends.vad.silero`).

``POST /v1/audio/vad``
    multipart/form-data, the first part named ``audio`` (its filename and content type are
    ignored) holding a WAV file (anything :func:`echokit_fast.audio.read_wav` reads:
    8..48 kHz, any channel count, 8/16/24/32-bit integer, 32/64-bit float, extensible).
    The channels are averaged, every rate but 16 kHz is resampled to 16 kHz, and the answer
    is ``{"timestamps": [{"start": S, "end": E}, ...]}`` in 16 kHz sample indices (half-open,
    padding applied) with the reference's defaults: threshold 0.5, min_speech_duration_ms
    250, min_silence_duration_ms 100, speech_pad_ms 30, max_speech infinite. Query parameters
    or form fields ``threshold`` (0..1), ``min_speech_duration_ms``,
    ``min_silence_duration_ms``, ``speech_pad_ms`` (0..600000 ms) tune them per request.
    Inference runs in a worker thread; the event loop keeps serving.

``WS /v1/audio/realtime_vad``
    Binary frames: PCM16 LE mono 16 kHz, any length (1 byte and odd counts included: the byte
    stream is re-framed exactly into 1024-byte windows, the odd byte carried). Text ``reset``:
    resets the model state and the trigger. Sends ``{"event":"speech_start"}`` /
    ``{"event":"speech_end"}``, and ``{"error":"VAD processing error","message":...}`` if the
    model fails (then closes with 1011). Query parameters: ``mode`` (``iterator``, the
    default, or ``compat``), ``threshold`` (0..1, default 0.5), ``min_silence_duration_ms``
    (iterator mode, default 100), ``min_speech_duration_ms`` (compat mode, default 250).
    Bad values are refused before the upgrade with HTTP 400 and ``{"error": ...}``.

    Every connection is a stream of one shared
    :class:`~echokit_fast.backends.vad.silero.VadBatcher`: one task per server steps it
    whenever a stream has a full window, so one model call serves every connection with
    audio ready (instead of one model copy and one call per connection, as the reference does).

Differences from silero_vad_server (docs/apis.md#silero-vad, #streaming and
docs/compatibility.md#companion-apis):

* HTTP errors are real status codes with ``{"error": "<what is wrong>"}``: 400 for a body
  that is not multipart/form-data, a broken multipart body, no ``audio`` part, a file that is
  not a usable WAV (``read_wav``'s message), a rate outside 8000..48000 Hz, a bad tuning
  parameter; 413 for a body over the limit (``AppState.max_body_bytes``, default 10 MiB,
  as the reference's) or a WAV whose header says more than ``[limits] max_audio_s`` (10
  minutes by default); 500 if the model fails. The reference answers 200 with
  ``{"error":"VAD processing error"}`` / ``{"error":"No audio provided"}``.
* WAV input: more formats (extensible, more than 2 channels mixed properly, data before fmt)
  and a band-limited resampler instead of the reference's linear/box one (no NaN sample),
  so segment edges can differ by a window from the reference for non-16 kHz files.
* Default model: Silero v6 (the reference runs v5; ``AppState(vad=SileroVad("v5"))``
  restores it). Samples are scaled by 1/32768 (the reference's WS uses 1/32767).
* Realtime, partial windows: any frame length works; the reference panics when a frame does
  not complete a buffered partial window.
* Realtime, default ``mode=iterator`` follows the official ``VADIterator``: ``speech_start`` on
  the first window with p >= threshold; ``speech_end`` once min_silence_duration_ms (100 ms)
  of windows with p < threshold - 0.15 follow, so a short dip does not cut an utterance
  (the reference ends on the first such window: the fixture clip's one utterance is split
  in two) and ``speech_end`` comes ~100 ms later than the reference's. No min-speech rule
  (VADIterator has none). ``mode=compat`` is the reference's StreamingVad exactly:
  immediate end, and the min-speech counter (250 ms) never reset during a connection, so
  it only guards the first utterance.
* ``reset`` (both modes) first lets the audio sent before it be processed (its events are
  still sent), then resets the model state, context and trigger; a partial window already
  received is kept (as the reference), so windows stay aligned with the connection's byte
  stream. In compat mode the min-speech counter survives a reset, as in the reference.
* Other text frames are ignored, as the reference does (an error reply would make EchoKit
  abort its session).
* An inference error sends the reference's error object, then closes the connection with
  1011 (the reference drops the socket or abandons part of a frame).
* A flood of audio is back-pressured: a connection stops reading once
  ``MAX_BACKLOG_WINDOWS`` of its windows wait for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from echokit_fast.api.common import BodyTooLarge, read_form, too_long_message
from echokit_fast.audio import AudioTooLong, wav_info
from echokit_fast.backends.vad.silero import (
    WAV_MAX_RATE,
    WAV_MIN_RATE,
    BatchedStream,
    StepResult,
    VadBatcher,
    WavInputError,
    speech_timestamps_from_wav,
)
from echokit_fast.server.state import AppState

log = logging.getLogger(__name__)

WINDOW_BYTES = 1024  # 512 samples of PCM16 at 16 kHz
MAX_MS = 600_000.0
#: Windows of one connection that may wait for the model before it stops reading.
MAX_BACKLOG_WINDOWS = 256  # ~8 s of audio
ERROR_EVENT = "VAD processing error"
START = json.dumps({"event": "speech_start"}, separators=(",", ":"))
END = json.dumps({"event": "speech_end"}, separators=(",", ":"))

# name -> (low, high), inclusive
HTTP_PARAMS: dict[str, tuple[float, float]] = {
    "threshold": (0.0, 1.0),
    "min_speech_duration_ms": (0.0, MAX_MS),
    "min_silence_duration_ms": (0.0, MAX_MS),
    "speech_pad_ms": (0.0, MAX_MS),
}
WS_MODES = ("iterator", "compat")
WS_PARAMS: dict[str, tuple[float, float]] = {
    "threshold": (0.0, 1.0),
    "min_silence_duration_ms": (0.0, MAX_MS),  # iterator mode
    "min_speech_duration_ms": (0.0, MAX_MS),  # compat mode
}
WS_MODE_ONLY = {"min_silence_duration_ms": "iterator", "min_speech_duration_ms": "compat"}


class ParamError(ValueError):
    pass


def parse_params(
    sources: list[Mapping[str, Any]], allowed: Mapping[str, tuple[float, float]]
) -> dict[str, float]:
    """The tuning parameters found in ``sources`` (query string, form fields), validated.

    Unknown names are ignored; a known one given twice with different values, not a number,
    not finite or out of range raises :class:`ParamError` naming it and the value.
    """
    out: dict[str, float] = {}
    raw: dict[str, str] = {}
    for source in sources:
        for name, (low, high) in allowed.items():
            values = source.getlist(name) if hasattr(source, "getlist") else [source.get(name)]
            for value in values:
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise ParamError(f"{name} must be a number, got a file part")
                if name in raw and raw[name] != value:
                    raise ParamError(f"{name} is given twice ({raw[name]!r} and {value!r})")
                raw[name] = value
                try:
                    number = float(value)
                except ValueError:
                    raise ParamError(f"{name} must be a number, got {value!r}") from None
                if not math.isfinite(number) or not low <= number <= high:
                    raise ParamError(f"{name} must be in {low:g}..{high:g}, got {value!r}")
                out[name] = number
    return out


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _first_part_bytes(body: bytes, content_type: str, name: str) -> bytes | None:
    """Raw bytes of the first multipart part named ``name``.

    Starlette hands a part without a filename over as text (decoded, possibly lossily); a
    WAV sent that way is read again from the raw body here, byte for byte.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        return None
    found: list[bytes] = []
    part: dict[str, Any] = {}

    def on_part_begin() -> None:
        part.clear()
        part.update(field=b"", value=b"", headers={}, data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["field"].lower()] = part["value"]
        part["field"], part["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part["data"].append(data[start:end])

    def on_part_end() -> None:
        if found:
            return
        _, opts = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if opts.get(b"name") == name.encode():
            found.append(b"".join(part["data"]))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return found[0] if found else None


async def _audio_part(request: Request, state: AppState) -> tuple[bytes, Any]:
    """``(wav bytes, form)``; raises BodyTooLarge, or ValueError with the client's mistake."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise ValueError(
            f"expected a multipart/form-data body with a part named 'audio', got Content-Type "
            f"{ctype or '(none)'!r}"
        )
    form = await read_form(request, state.max_body_bytes)
    parts = form.getlist("audio")
    if not parts:
        names = sorted(set(form.keys()))
        await form.close()
        raise ValueError(
            "no part named 'audio' in the multipart body"
            + (f" (parts: {', '.join(names)})" if names else " (it has no parts)")
        )
    first = parts[0]
    if isinstance(first, str):
        data = _first_part_bytes(await request.body(), ctype, "audio")
        if data is None:  # pragma: no cover - Starlette found it, so does the raw parser
            raise ValueError("the 'audio' part cannot be read")
    else:
        data = await first.read()
    return data, form


def _check_length(data: bytes, limit: float) -> None:
    """AudioTooLong when the WAV header says more than `limit` seconds (read before any
    sample is decoded). A file that is no usable WAV passes: the decoder says what is wrong."""
    try:
        info = wav_info(data)
    except ValueError:
        return
    if WAV_MIN_RATE <= info.sample_rate <= WAV_MAX_RATE and info.duration > limit:
        raise AudioTooLong(info.duration, limit)


def routes(state: AppState) -> list[BaseRoute]:
    realtime = state.realtime_vad = RealtimeVad(state.vad_model)

    async def vad_http(request: Request) -> JSONResponse:
        try:
            params = parse_params([request.query_params], HTTP_PARAMS)
            data, form = await _audio_part(request, state)
        except BodyTooLarge as exc:
            return _error(413, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            form_params = parse_params([form], HTTP_PARAMS)
        except ParamError as exc:
            return _error(400, str(exc))
        finally:
            await form.close()
        for name, value in form_params.items():
            if name in params and params[name] != value:
                return _error(400, f"{name} is given in both the query and the form, differently")
            params[name] = value
        try:
            _check_length(data, state.config.limits.max_audio_s)
        except AudioTooLong as exc:
            return _error(413, too_long_message(exc))
        try:
            model = await run_in_threadpool(state.vad_model)
            segments = await run_in_threadpool(
                speech_timestamps_from_wav, data, model=model, **params
            )
        except WavInputError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # model/runtime failure: not the client's fault
            log.exception("VAD failed")
            return _error(500, f"{ERROR_EVENT}: {exc}")
        return JSONResponse({"timestamps": segments})

    async def vad_ws(websocket: WebSocket) -> None:
        try:
            mode, params = ws_params(websocket.query_params)
        except ParamError as exc:
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                await websocket.send_denial_response(_error(400, str(exc)))
            else:  # pragma: no cover - servers without the denial-response extension
                await websocket.accept()
                await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await realtime.serve(websocket, mode, params)

    return [
        Route("/v1/audio/vad", vad_http, methods=["POST"]),
        WebSocketRoute("/v1/audio/realtime_vad", vad_ws),
    ]


def ws_params(query: Mapping[str, Any]) -> tuple[str, dict[str, float]]:
    """``(mode, params)`` of a realtime connection's query string (ParamError if bad)."""
    modes = query.getlist("mode") if hasattr(query, "getlist") else [query.get("mode")]
    modes = [m for m in modes if m is not None]
    if len(set(modes)) > 1:
        raise ParamError(f"mode is given twice ({modes[0]!r} and {modes[1]!r})")
    mode = modes[0] if modes else "iterator"
    if mode not in WS_MODES:
        raise ParamError(f"mode must be one of {', '.join(WS_MODES)}, got {mode!r}")
    params = parse_params([query], WS_PARAMS)
    for name, only in WS_MODE_ONLY.items():
        if name in params and only != mode:
            raise ParamError(f"{name} applies to mode={only} only (this connection: mode={mode})")
    return mode, params


class CompatStreamingVad:
    """silero_vad_server's ``StreamingVad`` (docs/apis.md#streaming) on per-window probabilities.

    ``speech_start`` on the first window with p >= threshold while idle; ``speech_end`` on
    the first window with p < neg_threshold while speaking, once the never-reset ``started``
    counter reached min_speech samples. Compared in float32, as the reference does.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_duration_ms: float = 250,
        sampling_rate: int = 16000,
    ) -> None:
        self.threshold = np.float32(threshold)
        neg = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
        self.neg_threshold = np.float32(neg)
        self.window = 512 if sampling_rate == 16000 else 256
        self.min_speech = int(sampling_rate * min_speech_duration_ms / 1000)
        self.triggered = False
        self.started = 0

    def step(self, p: float) -> str | None:
        p = np.float32(p)
        if p >= self.threshold:
            self.started += self.window
            if not self.triggered:
                self.triggered = True
                return "speech_start"
        elif p < self.neg_threshold:
            if self.triggered:
                if self.started >= self.min_speech:
                    self.triggered = False
                    return "speech_end"
                self.started += self.window
        elif self.triggered:
            self.started += self.window
        return None

    def reset(self) -> None:
        """The reference's ``reset``: the trigger only; ``started`` is kept."""
        self.triggered = False


class VadListener:
    """One stream of :class:`RealtimeVad` and its bookkeeping (lives on the event loop).

    Subclasses say what the stream's results mean: :meth:`on_result` gets each step's
    :class:`StepResult` for the stream, in order; :meth:`on_failure` is called once if the
    model fails while windows of the stream wait (the stream is closed by then). Both run in
    the service's one stepping task: a slow one holds back every stream.
    """

    def __init__(self, stream: BatchedStream) -> None:
        self.stream = stream
        self.carry = bytearray()  # < 1024 bytes: the partial window
        self.pushed = 0  # windows handed to the batcher
        self.done = 0  # windows whose results were delivered
        self.progress = asyncio.Event()
        self.failed = False
        self.stream_open = True

    def close_stream(self) -> None:
        if self.stream_open:
            self.stream_open = False
            self.stream.close()

    async def on_result(self, result: StepResult) -> None:
        raise NotImplementedError

    async def on_failure(self, message: str) -> None:
        raise NotImplementedError


class _Conn(VadListener):
    """A ``/v1/audio/realtime_vad`` connection: events sent as silero_vad_server's JSON."""

    def __init__(
        self, websocket: WebSocket, stream: BatchedStream, compat: CompatStreamingVad | None
    ):
        super().__init__(stream)
        self.websocket = websocket
        self.compat = compat
        self.closed = False

    async def on_result(self, result: StepResult) -> None:
        if self.compat is not None:
            for p in result.probabilities:
                event = self.compat.step(float(p))
                if event is not None:
                    await self.send(START if event == "speech_start" else END)
        else:
            for event in result.events:
                await self.send(START if "start" in event else END)

    async def on_failure(self, message: str) -> None:
        error = json.dumps({"error": ERROR_EVENT, "message": message}, separators=(",", ":"))
        await self.send(error)
        await self.close(1011, ERROR_EVENT)

    async def send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self.websocket.send_text(text)
        except Exception:  # the client went away; its handler cleans up
            self.closed = True

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # already gone
            await self.websocket.close(code=code, reason=reason)


L = TypeVar("L", bound=VadListener)


class RealtimeVad:
    """The batched engine behind ``WS /v1/audio/realtime_vad`` and the server VAD of
    ``/v1/realtime`` (one per app).

    One :class:`VadBatcher` for every stream; one asyncio task (started with the first
    :class:`VadListener`, ended with the last) runs :meth:`VadBatcher.astep` -- a worker
    thread -- whenever some listener pushed a full window, then hands each stream's results
    to its listener. Pushes made while a step runs are batched into the next one.
    """

    def __init__(self, model_factory: Callable[[], Any], *, max_windows_per_step: int = 8):
        self._model_factory = model_factory
        self._max_windows_per_step = max_windows_per_step
        self._batcher: VadBatcher | None = None
        self._batcher_lock = threading.Lock()
        self._conns: dict[int, VadListener] = {}
        self._wake = asyncio.Event()
        self._stepper: asyncio.Task | None = None
        self._stopping: asyncio.Task | None = None
        self._changed = threading.Condition()
        #: statistics: steps that served some stream, the most streams one step served, and
        #: windows received / answered over all connections so far
        self.steps = 0
        self.max_streams_per_step = 0
        self.windows_pushed = 0
        self.windows_done = 0

    # -- observation (tests, metrics) -----------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def open_streams(self) -> int:
        """Streams open in the batcher (one per live connection)."""
        return 0 if self._batcher is None else len(self._batcher)

    @property
    def stepping(self) -> bool:
        """Whether a stepping task exists (it ends with the last connection)."""
        return self._stepper is not None or self._stopping is not None

    def pending_windows(self) -> int:
        """Windows pushed and not yet answered, over all connections."""
        return sum(c.pushed - c.done for c in list(self._conns.values()))

    def wait_until(self, predicate: Callable[[RealtimeVad], bool], timeout: float) -> bool:
        """Block (from another thread) until ``predicate(self)`` holds; False on timeout.
        Re-checked on every change: connections opening or closing, windows pushed or
        answered, the stepping task ending."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- the engine -----------------------------------------------------------------------

    def _get_batcher(self) -> VadBatcher:
        with self._batcher_lock:
            if self._batcher is None:
                self._batcher = VadBatcher(
                    self._model_factory(), max_windows_per_step=self._max_windows_per_step
                )
            return self._batcher

    async def _start_stepper(self) -> None:
        while self._stopping is not None:  # the previous one finishes its step first
            await asyncio.wait({self._stopping})
        if self._stepper is None:
            self._wake = asyncio.Event()
            self._stepper = asyncio.get_running_loop().create_task(
                self._step_loop(self._wake), name="realtime-vad-stepper"
            )

    async def _stop_stepper(self) -> None:
        task, self._stepper = self._stepper, None
        if task is None:
            return
        self._stopping = task
        # Cleared by the task's own done callback, so that a handler cancelled while it
        # waits here (a client resetting its TCP connection) cannot leave it set.
        task.add_done_callback(self._stepper_done)
        self._wake.set()
        await asyncio.wait({task})

    def _stepper_done(self, task: asyncio.Task) -> None:
        if self._stopping is task:
            self._stopping = None
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - a bug
            log.error("realtime VAD stepper failed", exc_info=task.exception())
        self._notify()

    async def _step_loop(self, wake: asyncio.Event) -> None:
        me = asyncio.current_task()
        batcher = self._get_batcher()
        while True:
            await wake.wait()
            wake.clear()
            if self._stepper is not me:
                return
            try:
                results = await batcher.astep()
            except Exception as exc:  # the model failed: every waiting stream gets the error
                log.exception("realtime VAD inference failed")
                await self._fail_waiting(str(exc) or type(exc).__name__)
                continue
            if results:
                self.steps += 1
                self.max_streams_per_step = max(self.max_streams_per_step, len(results))
            for sid, result in results.items():
                conn = self._conns.get(sid)
                if conn is None or not conn.stream_open:
                    continue
                await conn.on_result(result)
                conn.done += len(result.probabilities)
                self.windows_done += len(result.probabilities)
                conn.progress.set()
            self._notify()

    async def _fail_waiting(self, message: str) -> None:
        for conn in list(self._conns.values()):
            if conn.pushed > conn.done and not conn.failed:
                conn.failed = True
                conn.close_stream()  # its windows must not fail the next steps again
                await conn.on_failure(message)
                conn.progress.set()
        self._notify()

    async def _wait_for(self, conn: VadListener, cond: Callable[[], bool]) -> None:
        while not cond() and not conn.failed:
            conn.progress.clear()
            await conn.progress.wait()

    # -- listeners: the WebSocket route's and other services' ------------------------------

    async def open(self, make: Callable[[BatchedStream], L], **params: float) -> L:
        """A listener (``make(stream)``) on a new stream of the shared batcher, with
        ``VADIterator`` parameters (:meth:`VadBatcher.open`); the stepping task runs while
        any listener is open. Loads the model on first use (raises if it cannot be loaded).
        End it with :meth:`close`."""
        batcher = await run_in_threadpool(self._get_batcher)  # loads the model once
        listener = make(batcher.open(**params))
        self._conns[listener.stream.id] = listener
        await self._start_stepper()
        self._notify()
        return listener

    async def close(self, listener: VadListener) -> None:
        """The listener's stream is closed; the stepping task ends with the last one."""
        if self._conns.pop(listener.stream.id, None) is None:
            return
        listener.close_stream()
        self._notify()
        if not self._conns:
            await self._stop_stepper()

    async def push(self, conn: VadListener, data: bytes) -> None:
        """PCM16 LE bytes for the listener's stream (whole windows go to the batcher, the rest
        waits); waits while more than ``MAX_BACKLOG_WINDOWS`` of its windows are unanswered."""
        carry = conn.carry
        carry += data
        whole = len(carry) // WINDOW_BYTES * WINDOW_BYTES
        if not whole:
            return
        chunk = bytes(carry[:whole])
        del carry[:whole]
        conn.stream.push(chunk)
        conn.pushed += whole // WINDOW_BYTES
        self.windows_pushed += whole // WINDOW_BYTES
        self._wake.set()
        self._notify()
        if conn.pushed - conn.done > MAX_BACKLOG_WINDOWS:
            await self._wait_for(conn, lambda: conn.pushed - conn.done <= MAX_BACKLOG_WINDOWS // 2)

    async def _reset(self, conn: _Conn) -> None:
        await self._wait_for(conn, lambda: conn.done == conn.pushed)  # earlier audio first
        if conn.failed:
            return
        conn.stream.reset()
        if conn.compat is not None:
            conn.compat.reset()

    async def serve(self, websocket: WebSocket, mode: str, params: Mapping[str, float]) -> None:
        """Serve one ``/v1/audio/realtime_vad`` connection (not yet accepted) until the client
        leaves."""
        threshold = params.get("threshold", 0.5)
        compat = None
        if mode == "compat":
            compat = CompatStreamingVad(
                threshold=threshold,
                min_speech_duration_ms=params.get("min_speech_duration_ms", 250.0),
            )
        try:
            conn = await self.open(
                lambda stream: _Conn(websocket, stream, compat),
                threshold=threshold,
                min_silence_duration_ms=params.get("min_silence_duration_ms", 100.0),
            )
        except Exception as exc:
            log.exception("the VAD model cannot be loaded")
            await websocket.accept()
            await websocket.close(code=1011, reason=f"VAD model unavailable: {exc}"[:120])
            return
        try:
            await websocket.accept()
            await self._receive_loop(conn)
        except WebSocketDisconnect:
            pass
        finally:
            conn.closed = True
            await self.close(conn)

    async def _receive_loop(self, conn: _Conn) -> None:
        websocket = conn.websocket
        while not conn.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                await self.push(conn, data)
                continue
            text = message.get("text")
            if text == "reset":
                await self._reset(conn)
            elif text is not None:
                log.debug("realtime VAD: ignoring text frame %r", text[:64])

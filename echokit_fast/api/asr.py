"""OpenAI-compatible speech recognition: ``POST /v1/audio/transcriptions`` and
``POST /v1/audio/translations`` (Whisper's translate task: any language to English).

Multipart fields as in the OpenAI API: ``file`` (required), ``model`` (accepted
and ignored: the one embedded Whisper model answers every name, so clients
configured for ``whisper-1`` or ``whisper-large-v3`` work unchanged),
``language`` (transcriptions), ``prompt``, ``response_format`` (``json``, ``text``,
``verbose_json``, ``srt``, ``vtt``), ``temperature``, ``timestamp_granularities[]``
(``word`` and/or ``segment``, with ``verbose_json``: ``words`` and ``segments`` in it) and
``stream`` (``true``: Server-Sent Events, a ``transcript.text.delta`` per segment as
Whisper decodes it, then ``transcript.text.done``; with ``json`` or ``text``). WAV of any
rate and channel count is decoded natively; other containers (mp3, ogg, flac, webm ...)
go through PyAV when it can decode them.

Errors are OpenAI-style JSON, ``{"error": {"message", "type", "param", "code"}}``:
400 for a missing or undecodable file ("could not decode the audio: " and what the file
seems to be), a sample rate outside 1000..384000 Hz and bad
parameters; 413 for an upload over the body limit or audio longer than ``[limits]
max_audio_s`` (10 minutes by default; refused from the header when it tells the length,
else once decoding reaches the limit); 429 (with ``Retry-After``) when the engine's queue
is full; 500 when the engine fails. A client that disconnects has its transcription
cancelled (dropped while it waits in the queue, stopped at the next 30 s window while it
runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from echokit_fast import audio
from echokit_fast.api.common import (
    ApiError,
    BodyTooLarge,
    error_body,
    read_form,
    too_long_message,
)
from echokit_fast.backends.base import BackendBusy, BackendError
from echokit_fast.server.state import AppState

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")

# Whisper's language names, for verbose_json's "language" (OpenAI gives the name).
_LANGUAGE_NAMES = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "cy": "welsh",
    "sk": "slovak",
    "fa": "persian",
    "yue": "cantonese",
}


async def get_engine(state: AppState) -> Any:
    """The app's ASR engine; a first use loads the model off the event loop."""
    return await asyncio.to_thread(state.asr_engine)


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _verbose(result: Any, granularities: frozenset[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": result.task,
        "language": _LANGUAGE_NAMES.get(result.language, result.language),
        "duration": round(result.duration, 3),
        "text": result.text,
    }
    if "word" in granularities:
        body["words"] = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in result.segments
            for w in s.words
        ]
    if "segment" in granularities or not granularities:  # OpenAI's default: segments
        body["segments"] = [
            {
                "id": s.id,
                "seek": s.seek,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": list(s.tokens),
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in result.segments
        ]
    return body


def render(
    result: Any, response_format: str, granularities: frozenset[str] = frozenset()
) -> Response:
    """The response for a TranscriptResult in one of RESPONSE_FORMATS (`granularities`:
    ``timestamp_granularities`` of verbose_json)."""
    if response_format == "json":
        return JSONResponse({"text": result.text})
    if response_format == "text":
        return PlainTextResponse(result.text + "\n" if result.text else "")
    segments = [s for s in result.segments if s.text.strip()]
    if response_format == "verbose_json":
        return JSONResponse(_verbose(result, granularities))
    if response_format == "srt":
        blocks = [
            f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
            for i, s in enumerate(segments, 1)
        ]
        return PlainTextResponse("\n".join(blocks), media_type="application/x-subrip")
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in segments
    ]
    return PlainTextResponse("WEBVTT\n\n" + "\n".join(blocks), media_type="text/vtt")


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if isinstance(value, UploadFile):
        raise ApiError(400, f"'{name}' must be a text field, not a file", param=name)
    return str(value)


@dataclass(frozen=True)
class _Request:
    """A parsed transcription or translation request."""

    data: bytes
    options: dict[str, Any]  # for the engine's submit()
    response_format: str
    granularities: frozenset[str]
    stream: bool


def _bool(form: Any, name: str) -> bool:
    value = (_field(form, name) or "false").strip().lower()
    if value not in ("true", "false"):
        raise ApiError(400, f"{name} must be true or false, got {value!r}", param=name)
    return value == "true"


async def _parse(request: Request, state: AppState, task: str) -> _Request:
    try:
        form = await read_form(request, state.max_body_bytes)
    except BodyTooLarge as exc:
        raise ApiError(413, f"{exc}", param="file", code="file_too_large") from exc
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    upload = form.get("file")
    if upload is None:
        raise ApiError(400, "missing the 'file' field (the audio to transcribe)", param="file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "'file' must be an uploaded file, not a text field", param="file")
    data = await upload.read()

    response_format = (_field(form, "response_format") or "json").strip()
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}; "
            f"got {response_format!r}",
            param="response_format",
        )
    granularities = frozenset(
        str(v).strip()
        for key in ("timestamp_granularities[]", "timestamp_granularities")
        for v in form.getlist(key)
    )
    if granularities - {"word", "segment"}:
        raise ApiError(
            400,
            "timestamp_granularities takes word and segment; got "
            f"{', '.join(sorted(granularities - {'word', 'segment'}))}",
            param="timestamp_granularities",
        )
    if granularities and response_format != "verbose_json":
        raise ApiError(
            400,
            "timestamp_granularities needs response_format verbose_json",
            param="timestamp_granularities",
        )
    stream = _bool(form, "stream")
    if stream and response_format not in ("json", "text"):
        raise ApiError(
            400, "stream=true takes response_format json or text", param="response_format"
        )
    options: dict[str, Any] = {
        "timestamps": response_format in ("verbose_json", "srt", "vtt"),
        "words": "word" in granularities,
        "task": task,
    }
    language = (_field(form, "language") or "").strip().lower()
    if language and task == "transcribe":  # a translation's language is detected
        options["language"] = language
    prompt = _field(form, "prompt")
    if prompt:
        options["prompt"] = prompt
    temperature = _field(form, "temperature")
    if temperature is not None and temperature.strip():
        try:
            options["temperature"] = float(temperature)
        except ValueError:
            raise ApiError(
                400, f"temperature must be a number, got {temperature!r}", param="temperature"
            ) from None
    _field(form, "model")  # accepted: one model serves every name
    return _Request(data, options, response_format, granularities, stream)


async def _decode(data: bytes, state: AppState) -> tuple[np.ndarray, int]:
    """An upload's mono samples and rate, within ``[limits] max_audio_s`` (ApiError if not)."""
    limit = state.config.limits.max_audio_s
    try:
        return await asyncio.to_thread(audio.decode_file, data, max_seconds=limit)
    except audio.AudioTooLong as exc:
        raise ApiError(413, too_long_message(exc), param="file", code="audio_too_long") from exc
    except audio.AudioRateError as exc:
        raise ApiError(400, str(exc), param="file", code="unsupported_sample_rate") from exc
    except ValueError as exc:
        raise ApiError(400, str(exc), param="file", code="invalid_audio") from exc


def _client_left() -> ApiError:
    # Nobody reads this answer; 499 is what access logs call a request whose client left.
    return ApiError(499, "the client disconnected before its transcription", code="client_closed")


async def _client_gone(request: Request) -> None:
    """Returns when the client of `request` (whose body has been read) disconnects."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _service(task: str) -> Any:
    async def endpoint(request: Request) -> Response:
        state: AppState = request.app.state.echokit
        try:
            req = await _parse(request, state, task)
            if req.stream:
                return await _streamed(state, req)
            gone = asyncio.ensure_future(_client_gone(request))
            try:
                result = await _transcribe(state, req.data, req.options, gone)
            finally:
                gone.cancel()
        except ApiError as exc:
            return exc.response()
        return render(result, req.response_format, req.granularities)

    return endpoint


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def _streamed(state: AppState, req: _Request) -> Response:
    """OpenAI's streamed transcription: a ``transcript.text.delta`` event per segment as
    Whisper decodes it, then ``transcript.text.done`` with the whole text. Errors before
    the first byte are statuses; a failure later is an ``error`` event. The client leaving
    cancels the job (Starlette cancels the body, whose ``finally`` cancels it)."""
    loop = asyncio.get_running_loop()
    segments: asyncio.Queue[Any] = asyncio.Queue()
    options = {
        **req.options,
        "on_segment": lambda s: loop.call_soon_threadsafe(segments.put_nowait, s),
    }
    job = await _submit(state, req.data, options)
    details = asyncio.ensure_future(job.details())
    details.add_done_callback(lambda _f: segments.put_nowait(None))

    async def events() -> AsyncIterator[bytes]:
        try:
            while (segment := await segments.get()) is not None:
                if segment.text.strip():
                    yield _sse({"type": "transcript.text.delta", "delta": segment.text})
            try:
                result = details.result()
            except BackendError as exc:
                log.error("transcription failed: %s", exc)
                message = f"{exc.notice} ({exc})"
                yield _sse(error_body(500, message, code="engine_error"))
                return
            yield _sse({"type": "transcript.text.done", "text": result.text})
        finally:
            if not details.done():
                job.cancel()
                details.cancel()

    return StreamingResponse(events(), media_type="text/event-stream")


async def _submit(state: AppState, data: bytes, options: dict[str, Any]) -> Any:
    """The engine's job for an upload (ApiError for what is refused before it runs)."""
    pcm, rate = await _decode(data, state)
    try:
        engine = await get_engine(state)
    except Exception as exc:  # model missing or failing to load: a server problem
        log.error("loading the ASR engine failed: %s", exc)
        raise ApiError(500, f"the speech recognizer could not be loaded: {exc}") from exc
    try:
        return engine.submit(pcm, sample_rate=rate, **options)
    except BackendBusy as exc:
        raise ApiError(429, f"{exc.notice} ({exc})", code="engine_busy") from exc
    except ValueError as exc:
        param = next((p for p in ("language", "temperature") if str(exc).startswith(p)), None)
        raise ApiError(400, str(exc), param=param) from exc


async def _transcribe(
    state: AppState, data: bytes, options: dict[str, Any], gone: asyncio.Future[None]
) -> Any:
    """The TranscriptResult of an upload; a client that leaves (`gone`) before it is
    ready has its job cancelled: dropped while queued, stopped at the next segment while
    running (:class:`~echokit_fast.backends.asr.local.WhisperJob`)."""
    job = await _submit(state, data, options)
    if gone.done():
        job.cancel()
        raise _client_left()
    details = asyncio.ensure_future(job.details())
    await asyncio.wait({details, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not details.done():
        job.cancel()
        details.cancel()
        log.info("transcription cancelled: the client disconnected")
        raise _client_left()
    try:
        return details.result()
    except BackendError as exc:
        log.error("transcription failed: %s", exc)
        raise ApiError(500, f"{exc.notice} ({exc})", code="engine_error") from exc


def routes(state: AppState) -> list[BaseRoute]:
    return [
        Route("/v1/audio/transcriptions", _service("transcribe"), methods=["POST"]),
        Route("/v1/audio/translations", _service("translate"), methods=["POST"]),
    ]

"""Text-to-speech over HTTP with the embedded engine (`echokit_fast.backends.tts.local.engine`).

Routes:

* ``POST /v1/audio/speech`` — OpenAI-compatible (``model``, ``input``, ``voice``,
  ``response_format``, ``speed``, ``stream_format``; ``instructions`` ignored).
  ``response_format``: ``mp3`` (the default, as OpenAI's), ``opus`` (Ogg), ``aac``
  (ADTS), ``flac``, ``wav``, ``pcm`` (raw s16le), mono at 24 kHz
  (:mod:`echokit_fast.api.speech_formats`), each streamed as it is synthesised and
  encoded. ``stream_format: "sse"`` sends the same audio as Server-Sent Events:
  ``speech.audio.delta`` (``audio``: base64) per piece, then ``speech.audio.done``.
  Any ``model`` is accepted.
  ``voice`` is one of the engine's voices; OpenAI's built-in names (``alloy`` ...)
  that are not ours mean the configured voice, so clients set up for OpenAI work
  unchanged. A voice the engine knows but cannot load (not downloaded, and no network
  to fetch it) is a 400 naming it and how to install it. Errors are OpenAI-style
  JSON ``{"error": {"message", "type", "param", "code"}}``.

  The same path is also gsv_tts's whole-utterance route. A body that has
  ``speaker`` or ``sample_rate`` and no ``model`` (what EchoKit's ``gsv`` platform
  sends) is answered as gsv_tts does: one complete WAV at ``sample_rate`` (default
  32000) with exact sizes, and plain-text errors.
* ``POST /v1/audio/stream_speech`` — gsv_tts-compatible: JSON ``input``,
  ``speaker`` (alias ``voice``), ``sample_rate`` (48000, 44000, 32000, 24000,
  16000 or 8000; default 32000) -> chunked raw s16le mono PCM at that rate, one
  body chunk per synthesised piece, with ``Content-Type: audio/pcm;rate=<rate>``
  (the reference always says 32000).
* ``POST /v1/audio/batch_speech`` — the same (the reference's "one chunk per
  segment" is what stream_speech does here already).
* ``GET /v1/audio/speakers`` — JSON array of voice names.

gsv routes differ from the reference on purpose where it fails silently: an
unknown speaker or an empty ``input`` is a 400 (the reference answers 200 with an
empty body), ``speaker`` may be omitted (the configured voice), a text over
`MAX_INPUT_CHARS` is a 400, and a full engine is a 429 (with ``Retry-After``) instead of waiting.
Headers leave once the first audio exists (so failures before it still get an
error status); the first audio leaves as soon as the first piece is synthesised.

Capacity: these routes use the engine's HTTP API share of its streams
(``speak(client="api")``, ``[limits] tts_streams`` less ``tts_device_reserve``, the
rest being kept for devices); past it a request is answered 429 with ``Retry-After``
at once. A streamed answer holds its stream while it is being sent: a client that
does not take a chunk within ``[limits] http_send_timeout_s`` is cut off (the
synthesis cancelled, the stream freed, the connection closed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from echokit_fast.api.common import RETRY_AFTER_S, ApiError, PacedResponse, read_json
from echokit_fast.api.speech_formats import FORMATS, Encoder, media_type
from echokit_fast.audio import write_wav
from echokit_fast.backends.base import BackendBusy, BackendError
from echokit_fast.backends.tts.local import engine as tts
from echokit_fast.server.state import AppState

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 4096  # OpenAI's limit for /v1/audio/speech
MAX_BODY_BYTES = 256 * 1024  # 4096 characters as \uXXXX escapes fit easily
OPENAI_RATE = 24000
OPENAI_VOICES = frozenset(
    [
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    ]
)
GSV_RATES = (48000, 44000, 32000, 24000, 16000, 8000)
GSV_DEFAULT_RATE = 32000


def _text_error(exc: ApiError) -> PlainTextResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status in (429, 503) else None
    return PlainTextResponse(exc.message, status_code=exc.status, headers=headers)


def _input(body: dict[str, Any], missing_status: int) -> str:
    if "input" not in body:
        raise ApiError(missing_status, "missing field `input`", param="input")
    text = body["input"]
    if not isinstance(text, str):
        raise ApiError(
            missing_status,
            f"`input` must be a string, got {type(text).__name__}",
            param="input",
        )
    if not text.strip():
        raise ApiError(400, "`input` is empty: nothing to say", param="input")
    if len(text) > MAX_INPUT_CHARS:
        raise ApiError(
            400,
            f"`input` is {len(text)} characters long; the limit is {MAX_INPUT_CHARS}",
            param="input",
            code="string_above_max_length",
        )
    return text


async def _engine(state: AppState) -> tts.LocalSpeaker:
    try:
        return await asyncio.to_thread(state.tts_engine)
    except BackendError as exc:
        log.error("tts: %s", exc)
        raise ApiError(503, f"TTS service is not available: {exc.notice}") from None


def _voice(engine: tts.LocalSpeaker, voice: Any, param: str, *, openai: bool) -> str | None:
    if voice is None:
        return None
    if not isinstance(voice, str):
        raise ApiError(400, f"`{param}` must be a string, got {type(voice).__name__}", param=param)
    if openai and voice not in engine.voices() and voice.lower() in OPENAI_VOICES:
        return None  # an OpenAI voice name: the configured voice
    try:
        return engine.resolve_voice(voice)
    except tts.UnknownVoice as exc:
        raise ApiError(400, str(exc), param=param, code="unknown_voice") from None


async def _start(
    engine: tts.LocalSpeaker, text: str, rate: int, voice: str | None, speed: float | None
) -> AsyncIterator[np.ndarray]:
    """The engine's stream, with its first chunk already produced (or an empty
    iterator), so that errors before any audio become an HTTP status."""
    stream = engine.speak(text, sample_rate=rate, voice=voice, speed=speed, client="api")
    try:  # an exception out of the generator has already closed it
        first = await anext(stream)
    except StopAsyncIteration:
        first = None
    except BackendBusy as exc:
        raise ApiError(429, f"TTS service is busy: {exc}", code="server_busy") from None
    except tts.VoiceNotInstalled as exc:
        raise ApiError(400, str(exc), param="voice", code="voice_not_installed") from None
    except BackendError as exc:
        log.error("tts: %s", exc)
        raise ApiError(500, "TTS service is not available") from None

    async def chunks() -> AsyncIterator[np.ndarray]:
        try:
            if first is None:
                return
            yield first
            async for chunk in stream:
                yield chunk
        except BackendError as exc:  # mid-stream: the status is sent, end the body early
            log.error("tts: %s", exc)
        finally:
            await stream.aclose()  # also on client disconnect: stops the synthesis

    return chunks()


def _streamed(state: AppState, chunks: AsyncIterator[bytes], media_type: str) -> Response:
    timeout = state.config.limits.http_send_timeout_s
    return PacedResponse(chunks, send_timeout=timeout, media_type=media_type, what="tts")


# --- OpenAI -------------------------------------------------------------------------


def _speed(body: dict[str, Any]) -> float | None:
    speed = body.get("speed")
    if speed is None:
        return None
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise ApiError(400, f"`speed` must be a number, got {speed!r}", param="speed")
    if not tts.MIN_SPEED <= speed <= tts.MAX_SPEED:
        raise ApiError(
            400,
            f"`speed` must be between {tts.MIN_SPEED} and {tts.MAX_SPEED}, got {speed}",
            param="speed",
        )
    return float(speed)


async def _encoded(chunks: AsyncIterator[np.ndarray], encoder: Encoder) -> AsyncIterator[bytes]:
    """The synthesised chunks in the encoder's format, each as soon as it is encoded."""
    try:
        async for chunk in chunks:
            data = await asyncio.to_thread(encoder.encode, chunk)
            if data:
                yield data
        tail = await asyncio.to_thread(encoder.finish)
        if tail:
            yield tail
    finally:
        encoder.close()
        await chunks.aclose()  # type: ignore[attr-defined]


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def _events(audio: AsyncIterator[bytes], text: str) -> AsyncIterator[bytes]:
    """OpenAI's speech events: ``speech.audio.delta`` (the audio, base64) per piece, then
    ``speech.audio.done`` (its usage counts the input's words as tokens; no output tokens)."""
    try:
        async for data in audio:
            delta = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
            yield _sse(delta)
    finally:
        await audio.aclose()  # type: ignore[attr-defined]
    words = len(text.split())
    usage = {"input_tokens": words, "output_tokens": 0, "total_tokens": words}
    yield _sse({"type": "speech.audio.done", "usage": usage})


async def _openai_speech(state: AppState, body: dict[str, Any]) -> Response:
    text = _input(body, 400)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"`model` must be a string, got {type(model).__name__}", param="model")
    fmt = body.get("response_format") or "mp3"  # OpenAI's default
    if fmt not in FORMATS:
        raise ApiError(
            400,
            f"response_format {fmt!r} is not supported; use one of {', '.join(FORMATS)}",
            param="response_format",
        )
    stream_format = body.get("stream_format") or "audio"
    if stream_format not in ("audio", "sse"):
        raise ApiError(
            400,
            f"stream_format {stream_format!r} is not supported; use 'audio' or 'sse'",
            param="stream_format",
        )
    speed = _speed(body)
    engine = await _engine(state)
    voice = _voice(engine, body.get("voice"), "voice", openai=True)
    chunks = await _start(engine, text, OPENAI_RATE, voice, speed)
    audio = _encoded(chunks, Encoder(fmt, OPENAI_RATE))
    if stream_format == "sse":
        return _streamed(state, _events(audio, text), "text/event-stream")
    return _streamed(state, audio, media_type(fmt, OPENAI_RATE))


# --- gsv_tts ------------------------------------------------------------------------


def _is_gsv(body: dict[str, Any]) -> bool:
    return "model" not in body and ("speaker" in body or "sample_rate" in body)


async def _gsv_request(
    state: AppState, body: dict[str, Any]
) -> tuple[tts.LocalSpeaker, str, int, str | None]:
    if "speaker" in body and "voice" in body:
        raise ApiError(422, "duplicate field `speaker` (`voice` is its alias)")
    text = _input(body, 422)
    rate = body.get("sample_rate")
    if rate is None:
        rate = GSV_DEFAULT_RATE
    elif isinstance(rate, bool) or not isinstance(rate, int):
        raise ApiError(422, f"`sample_rate` must be an integer, got {rate!r}")
    elif rate not in GSV_RATES:
        raise ApiError(
            400,
            f"Unsupported sample rate: {rate}, only {', '.join(map(str, GSV_RATES))} are supported",
        )
    key = "speaker" if "speaker" in body else "voice"
    engine = await _engine(state)
    voice = _voice(engine, body.get(key), key, openai=False)
    return engine, text, rate, voice


async def _gsv_stream(state: AppState, body: dict[str, Any]) -> Response:
    engine, text, rate, voice = await _gsv_request(state, body)
    chunks = await _start(engine, text, rate, voice, None)
    return _streamed(state, _encoded(chunks, Encoder("pcm", rate)), media_type("pcm", rate))


async def _gsv_whole(state: AppState, body: dict[str, Any]) -> Response:
    engine, text, rate, voice = await _gsv_request(state, body)
    chunks = await _start(engine, text, rate, voice, None)
    parts = [chunk async for chunk in chunks]
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return Response(write_wav(audio, rate), media_type="audio/wav")


# --- routes -------------------------------------------------------------------------


def routes(state: AppState) -> list[BaseRoute]:
    limit = min(state.max_body_bytes, MAX_BODY_BYTES)

    async def speech(request: Request) -> Response:
        try:
            body = await read_json(request, limit)
        except ApiError as exc:
            return exc.response()
        if _is_gsv(body):
            try:
                return await _gsv_whole(state, body)
            except ApiError as exc:
                return _text_error(exc)
        try:
            return await _openai_speech(state, body)
        except ApiError as exc:
            return exc.response()

    async def stream_speech(request: Request) -> Response:
        try:
            body = await read_json(request, limit)
            return await _gsv_stream(state, body)
        except ApiError as exc:
            return _text_error(exc)

    async def speakers(_request: Request) -> Response:
        try:
            engine = await _engine(state)
        except ApiError as exc:
            return _text_error(exc)
        return JSONResponse(engine.voices())

    return [
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/v1/audio/stream_speech", stream_speech, methods=["POST"]),
        Route("/v1/audio/batch_speech", stream_speech, methods=["POST"]),
        Route("/v1/audio/speakers", speakers, methods=["GET"]),
    ]

"""OpenAI-compatible speech recognition: ``POST /v1/audio/transcriptions``, ``GET /v1/models``.

Multipart fields as in the OpenAI API: ``file`` (required), ``model`` (accepted
and ignored: the one embedded Whisper model answers every name, so clients
configured for ``whisper-1`` or ``whisper-large-v3`` work unchanged),
``language``, ``prompt``, ``response_format`` (``json``, ``text``,
``verbose_json``, ``srt``, ``vtt``) and ``temperature``. WAV of any rate and
channel count is decoded natively; other containers (mp3, ogg, flac, webm ...)
go through PyAV when it can decode them.

Errors are OpenAI-style JSON, ``{"error": {"message", "type", "param", "code"}}``:
400 for a missing or undecodable file and bad parameters, 413 for an upload
over the body limit, 503 (with ``Retry-After``) when the engine's queue is
full, 500 when the engine fails.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from echokit_fast.api.common import BodyTooLarge, read_form
from echokit_fast.backends.base import BackendBusy, BackendError
from echokit_fast.server.app import AppContext

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
CREATED = 1_700_000_000  # a fixed "created" time for /v1/models entries

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


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        headers = {"Retry-After": "1"} if self.status == 503 else None
        body = {
            "error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}
        }
        return JSONResponse(body, status_code=self.status, headers=headers)


async def get_engine(ctx: AppContext) -> Any:
    """The context's ASR engine; a first use loads the model off the event loop."""
    from echokit_fast.backends.asr.local.engine import shared

    return await asyncio.to_thread(shared, ctx)


def decode_upload(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate from an uploaded file (ValueError if undecodable)."""
    from echokit_fast import audio

    if not data:
        raise ValueError("the uploaded file is empty")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        samples, rate = audio.read_wav(data)
        mono = audio.to_mono(np.ascontiguousarray(samples), samples.shape[1])
        if audio.RESAMPLE_MIN_RATE <= rate <= audio.RESAMPLE_MAX_RATE:
            return mono, rate
        # A rate the native resampler does not take: let PyAV resample it below.
    try:
        from faster_whisper.audio import decode_audio

        pcm = decode_audio(io.BytesIO(data), sampling_rate=16000)
    except Exception as exc:  # PyAV's errors for data it cannot read
        raise ValueError(
            f"could not decode the audio file (WAV, or a format FFmpeg reads): {exc}"
        ) from exc
    return np.asarray(pcm, dtype=np.float32), 16000


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(result: Any, response_format: str) -> Response:
    """The response for a TranscriptResult in one of RESPONSE_FORMATS."""
    if response_format == "json":
        return JSONResponse({"text": result.text})
    if response_format == "text":
        return PlainTextResponse(result.text + "\n" if result.text else "")
    segments = [s for s in result.segments if s.text.strip()]
    if response_format == "verbose_json":
        return JSONResponse(
            {
                "task": "transcribe",
                "language": _LANGUAGE_NAMES.get(result.language, result.language),
                "duration": round(result.duration, 3),
                "text": result.text,
                "segments": [
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
                ],
            }
        )
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


async def _parse(request: Request, ctx: AppContext) -> tuple[bytes, dict[str, Any], str]:
    try:
        form = await read_form(request, ctx.max_body_bytes)
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
    options: dict[str, Any] = {"timestamps": response_format in ("verbose_json", "srt", "vtt")}
    language = (_field(form, "language") or "").strip().lower()
    if language:
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
    return data, options, response_format


async def transcriptions(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    try:
        data, options, response_format = await _parse(request, ctx)
        try:
            pcm, rate = await asyncio.to_thread(decode_upload, data)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="file", code="invalid_audio") from exc
        try:
            engine = await get_engine(ctx)
        except Exception as exc:  # model missing or failing to load: a server problem
            log.error("loading the ASR engine failed: %s", exc)
            raise ApiError(500, f"the speech recognizer could not be loaded: {exc}") from exc
        try:
            job = engine.submit(pcm, sample_rate=rate, **options)
        except BackendBusy as exc:
            raise ApiError(503, f"{exc.notice} ({exc})", code="engine_busy") from exc
        except ValueError as exc:
            param = next((p for p in ("language", "temperature") if str(exc).startswith(p)), None)
            raise ApiError(400, str(exc), param=param) from exc
        try:
            result = await job.details()
        except BackendError as exc:
            log.error("transcription failed: %s", exc)
            raise ApiError(500, f"{exc.notice} ({exc})", code="engine_error") from exc
    except ApiError as exc:
        return exc.response()
    return render(result, response_format)


async def models(request: Request) -> JSONResponse:
    """The engines loaded in this process that have a model id, in OpenAI's list format."""
    ctx: AppContext = request.app.state.ctx
    data = [
        {"id": e.model_id, "object": "model", "created": CREATED, "owned_by": "echokit-fast"}
        for e in ctx.loaded()
        if isinstance(getattr(e, "model_id", None), str)
    ]
    return JSONResponse({"object": "list", "data": data})


def routes(ctx: AppContext) -> list[BaseRoute]:
    return [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]

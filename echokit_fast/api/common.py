"""What the services share: the OpenAI error body, bounded bodies, JSON bodies and multipart
forms, streamed answers with a send deadline, the words of an audio-length refusal."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Message, Send

from echokit_fast.audio import AudioTooLong

#: how long a client refused for load (429, 503) is told to wait, in seconds
RETRY_AFTER_S = 1


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI error answer; 429 and 503 carry ``Retry-After``."""
    if status in (429, 503):
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    body = error_body(status, message, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


class ApiError(Exception):
    """A refusal of an OpenAI-compatible route, answered by :meth:`response`."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


class BodyIncomplete(ValueError):
    """The client left (or stalled past ``[limits] body_timeout_s``) before the whole body
    came: whatever the route answers goes nowhere."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (BodyTooLarge) as soon as it passes `limit` bytes.

    A declared Content-Length over the limit is refused before reading; a chunked
    body is counted while it streams, so an oversized upload never sits in memory.
    BodyIncomplete when the client disconnects first.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise BodyIncomplete("the client disconnected before sending the whole body") from None
    body = b"".join(chunks)
    request._body = body  # Starlette's cache: request.form() now parses these bytes
    return body


async def read_form(request: Request, limit: int) -> FormData:
    """A multipart (or urlencoded) form from a body of at most `limit` bytes.

    Raises BodyTooLarge, or ValueError with a clear message when the body is not
    a form (wrong Content-Type, missing boundary, broken multipart).
    """
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ValueError(
            f"expected a multipart/form-data body, got Content-Type {ctype or '(none)'!r}"
        )
    if ctype.startswith("multipart/form-data") and "boundary=" not in ctype:
        raise ValueError("multipart/form-data Content-Type has no boundary")
    await read_body(request, limit)
    try:
        return await request.form(max_files=16, max_fields=64, max_part_size=limit)
    except Exception as exc:  # python-multipart / Starlette parse errors
        raise ValueError(f"malformed multipart body: {exc}") from exc


def too_long_message(exc: AudioTooLong) -> str:
    """What a 413 for audio over ``[limits] max_audio_s`` says: the length, the limit, the key."""
    return (
        f"{exc} (the server's limit: max_audio_s = {exc.limit:g} in the [limits] table of its "
        "config file)"
    )


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object of the body. A missing or odd Content-Type is tolerated (curl
    users forget it); a form is refused with 415."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise ApiError(415, f"expected Content-Type: application/json, got {ctype!r}")
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except BodyIncomplete as exc:
        raise ApiError(400, str(exc)) from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # json's C parser recurses once per nesting level
        raise ApiError(400, "the body is not valid JSON: it is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(body).__name__}")
    return body


class _SlowClient(Exception):
    pass


class PacedResponse(StreamingResponse):
    """A streamed answer whose client must take each message within `send_timeout`
    seconds. Sending waits while the client does not read (uvicorn's flow control), so
    this bounds how long a client that stopped reading holds an engine (a TTS stream, the
    LLM): past the deadline the body is closed (the synthesis or generation stopped) and
    the response ends unfinished (the server closes the connection). ``what`` names the
    route: its logger (``echokit_fast.api.<what>``) and the log line."""

    def __init__(self, content: AsyncIterator[bytes], *, send_timeout: float, what: str, **kw: Any):
        super().__init__(content, **kw)
        self.send_timeout = send_timeout
        self.what = what

    async def stream_response(self, send: Send) -> None:
        async def timed(message: Message) -> None:
            try:
                await asyncio.wait_for(send(message), self.send_timeout)
            except TimeoutError:
                raise _SlowClient from None

        try:
            await super().stream_response(timed)
        except _SlowClient:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            logging.getLogger(f"echokit_fast.api.{self.what}").warning(
                "%s: the client took nothing for %g s (limits.http_send_timeout_s): "
                "response cut off, its engine freed",
                self.what,
                self.send_timeout,
            )

"""OpenAI's Chat Completions over the in-process LLM: ``POST /v1/chat/completions``.

This server then replaces an OpenAI-compatible LLM server (LlamaEdge's llama-api-server,
``python -m llama_cpp.server``) for the ``openai`` client, echokit_server itself and other
tools. It answers only when ``[llm] platform = "local"`` (``serve --llm-model``) loaded a
model; otherwise every request is a 404 ``model_not_found`` that says how to load one, and
while the model loads a 503.

* Request: ``messages`` (``system``/``developer``/``user``/``assistant``/``tool``; content a
  string or text parts), ``model`` (any name: there is one model), ``stream``,
  ``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``stop`` (a string
  or up to 4), ``seed``, ``n`` (1 only), ``presence_penalty``, ``frequency_penalty``,
  ``logit_bias``, ``response_format`` (``text``, ``json_object``, ``json_schema``),
  ``logprobs``/``top_logprobs``, ``tools``/``tool_choice`` (with a chat format that returns
  tool calls), ``user`` and ``parallel_tool_calls`` (accepted, unused), and llama.cpp's
  ``top_k``, ``min_p``, ``repeat_penalty``. Any other key is a 400 naming it, as OpenAI
  answers one it does not know.
* Answer: ``chat.completion`` with ``usage``; or, with ``stream``, Server-Sent Events of
  ``chat.completion.chunk`` objects ending in ``data: [DONE]``; an error after the first
  chunk is an ``{"error": ...}`` event, then the stream ends.
* The requests share the model with the devices, first come first served (see
  :mod:`echokit_fast.backends.llm.local.engine`): a full queue is a 429 with
  ``Retry-After``; a prompt over the context a 400 ``context_length_exceeded``. A client that
  disconnects, or takes no chunk within ``[limits] http_send_timeout_s``, stops its answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from echokit_fast.api.common import ApiError, PacedResponse, error_body, read_json
from echokit_fast.backends.base import BackendBusy, BackendError
from echokit_fast.server.state import AppState

__all__ = ["routes"]

ROLES = ("system", "developer", "user", "assistant", "tool")
#: request keys passed to llama.cpp as they are (after their check)
SAMPLING = (
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "logprobs",
    "top_logprobs",
    "top_k",
    "min_p",
    "repeat_penalty",
)
#: keys OpenAI takes that change nothing here
IGNORED = ("model", "user", "parallel_tool_calls", "store", "metadata")
KNOWN = frozenset(
    {*SAMPLING, *IGNORED, "messages", "stream", "stream_options", "n", "max_tokens"}
    | {"max_completion_tokens", "logit_bias", "tools", "tool_choice"}
)
NUMBERS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "min_p": (0.0, 1.0),
    "repeat_penalty": (0.0, 10.0),
}
INTEGERS = ("seed", "top_k", "top_logprobs")


def _message(i: int, msg: Any) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise ApiError(400, f"{where} must be an object", param=where)
    role = msg.get("role")
    if role not in ROLES:
        raise ApiError(
            400, f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", param=where
        )
    out = dict(msg)
    if role == "developer":
        out["role"] = "system"  # OpenAI's newer name of the system role
    content = msg.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(
                    400,
                    f"{where}.content: only text parts are supported, got {kind!r}",
                    param=where,
                )
            texts.append(str(part.get("text", "")))
        out["content"] = "".join(texts)
    elif content is not None and not isinstance(content, str):
        raise ApiError(400, f"{where}.content must be a string or a list of parts", param=where)
    elif content is None and not msg.get("tool_calls"):
        raise ApiError(400, f"{where}.content is missing", param=where)
    return out


def _request(body: dict[str, Any], tools_supported: bool) -> tuple[dict[str, Any], bool]:
    """``(create_chat_completion keywords, stream)`` of a request body; ApiError 400 names
    what is wrong."""
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise ApiError(
            400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty array", param="messages")
    request: dict[str, Any] = {"messages": [_message(i, m) for i, m in enumerate(messages)]}
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be a boolean", param="stream")
    if body.get("stream_options") not in (None, {}) and stream:
        options = body["stream_options"]
        if not isinstance(options, dict) or options.get("include_usage"):
            raise ApiError(
                400,
                "stream_options.include_usage is not supported; ask without stream for usage",
                param="stream_options",
            )
    n = body.get("n", 1)
    if n != 1:
        raise ApiError(400, "n must be 1 (one choice per request)", param="n")
    for key, (low, high) in NUMBERS.items():
        value = body.get(key)
        if value is None:
            continue
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not (low <= value <= high)
        ):
            raise ApiError(400, f"{key} must be a number from {low:g} to {high:g}", param=key)
    for key in INTEGERS:
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ApiError(400, f"{key} must be an integer", param=key)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or len(stops) > 4
            or not all(isinstance(s, str) for s in stops)
        ):
            raise ApiError(400, "stop must be a string or up to 4 strings", param="stop")
    for key in SAMPLING:
        if body.get(key) is not None:
            request[key] = body[key]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ApiError(400, "max_tokens must be a positive integer", param="max_tokens")
        request["max_tokens"] = limit
    bias = body.get("logit_bias")
    if bias is not None:
        try:
            request["logit_bias"] = {int(k): float(v) for k, v in dict(bias).items()}
        except (TypeError, ValueError):
            raise ApiError(
                400, "logit_bias maps token ids to numbers", param="logit_bias"
            ) from None
    if body.get("tools"):
        if not tools_supported:
            raise ApiError(
                400,
                "this model's chat format returns no tool calls (start the server with [llm] "
                'chat_format = "chatml-function-calling")',
                param="tools",
            )
        request["tools"] = body["tools"]
        if body.get("tool_choice") is not None:
            request["tool_choice"] = body["tool_choice"]
    return request, stream


def _failure(exc: BackendError) -> tuple[int, str | None]:
    from echokit_fast.backends.llm.local.engine import NOTICE_TOO_LONG, RequestRejected

    if isinstance(exc, BackendBusy):
        return 429, "rate_limit_exceeded"
    if isinstance(exc, RequestRejected):
        return 400, "context_length_exceeded" if exc.notice == NOTICE_TOO_LONG else None
    return 500, None


def routes(state: AppState) -> list[BaseRoute]:
    limit = state.config.limits.max_json_bytes

    async def completions(request: Request) -> Response:
        try:
            body = await read_json(request, limit)
            engine = state.llm
            if engine is None and not _loading(state):
                raise ApiError(
                    404,
                    "This server has no language model: start it with --llm-model MODEL.gguf "
                    '(or [llm] platform = "local")',
                    param="model",
                    code="model_not_found",
                )
            if engine is None or not state.ready:
                raise ApiError(503, "The language model is still loading; try again shortly")
            kwargs, stream = _request(body, engine.tools_supported)
            if not stream:
                return JSONResponse(await engine.complete(kwargs))
            answer = engine.stream(kwargs)  # a full queue is refused here, before the headers
        except ApiError as exc:
            return exc.response()
        except BackendError as exc:
            status, code = _failure(exc)
            return ApiError(status, str(exc), code=code).response()
        return PacedResponse(
            _events(answer),
            send_timeout=state.config.limits.http_send_timeout_s,
            what="chat",
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return [Route("/v1/chat/completions", completions, methods=["POST"])]


def _loading(state: AppState) -> bool:
    """Whether the config's LLM is the in-process one (being loaded, or failed)."""
    from echokit_fast.backends.llm.local import LocalLLM

    return isinstance(state.config.llm, LocalLLM)


async def _events(answer: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer:
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    except BackendError as exc:
        status, code = _failure(exc)
        error = error_body(status, str(exc), code=code)
        yield b"data: " + json.dumps(error).encode() + b"\n\n"
        return
    finally:
        await answer.aclose()  # a disconnect or a slow client: stop the model
    yield b"data: [DONE]\n\n"

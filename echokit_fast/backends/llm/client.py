"""What the LLM platforms share: :class:`LLMBackend` (the MCP tools, the prompt includes,
``extra``; the in-process model's backend too), :class:`OpenAIBackend` (plus the HTTP client and
its timeouts) and :func:`stream` (one streamed request, every failure a BackendError with a
notice).

Requests go through the ``openai`` SDK's raw ``post`` to ``llm.url`` (the full endpoint, used as
is), ``User-Agent: curl/7.81.0``, ``Authorization: Bearer <api_key>`` only with a key (exactly one
``Bearer``: the config loader strips a ``Bearer `` prefix). Timeouts (the reference has none):
connecting ``connect_timeout`` (10 s), the first content ``first_token_timeout`` (``[limits]
llm_first_token_s``, 60 s: local servers may load a model first), each later content within
``idle_timeout`` of the one before (``[limits] llm_stall_s``, 30 s). Only content counts (text,
reasoning or tool-call pieces, as each platform's ``progress`` says): a server that keeps
sending empty deltas or keep-alive events stalls all the same. ``None`` disables one.
A server that answers ``stream: true`` with one JSON body (a non-streamed answer) is read too:
at most ``max_json_bytes`` (``[limits]``), within the first-content deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx

from echokit_fast.backends import http
from echokit_fast.backends.base import BackendError, Conversation
from echokit_fast.backends.llm.errors import NOTICE_FAILED, NOTICES, status_error
from echokit_fast.backends.llm.includes import IncludeCache
from echokit_fast.backends.llm.mcp import MCPTools
from echokit_fast.backends.llm.prompts import Msg

__all__ = ["MAX_TOOL_ROUNDS", "LLMBackend", "OpenAIBackend", "stream"]

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 8


class LLMBackend:
    """What all conversations of one ``[llm]`` share, whatever carries the requests (HTTP or
    the in-process model): the MCP tools (listed on first use), the include cache and HTTP
    client of ``prompts_url`` and the ``{{url}}`` includes, and ``extra`` (its reserved keys
    dropped with a warning). Create inside the running event loop; :meth:`aclose` at
    shutdown. Subclasses give :meth:`conversation`."""

    #: ``extra`` keys the server sets itself (ignored with a warning)
    reserved_extra: tuple[str, ...] = ()

    def __init__(
        self,
        cfg: Any,
        *,
        tools: MCPTools | None = None,
        include_cache: IncludeCache | None = None,
        prompt_timeout: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.tools = tools if tools is not None else MCPTools()
        # MCP tools are listed on first use (needs the event loop), once.
        self._tools_pending = tools is None and bool(cfg.mcp_server)
        self._tools_lock: asyncio.Lock | None = None
        self.include_cache = include_cache if include_cache is not None else IncludeCache()
        self.http = http.client(prompt_timeout, follow_redirects=True)
        extra = dict(cfg.extra or {})
        for key in self.reserved_extra:
            if key in extra:
                log.warning("llm.extra.%s ignored: the server sets %s itself", key, key)
                del extra[key]
        self.extra = extra

    @classmethod
    async def create(cls, cfg: Any, **kw: Any) -> Any:
        """Like the constructor, listing the MCP tools of ``cfg.mcp_server`` now."""
        backend = cls(cfg, **kw)
        await backend.ensure_tools()
        return backend

    async def ensure_tools(self) -> None:
        """List the MCP tools if that has not been done yet (servers that fail are skipped)."""
        if not self._tools_pending:
            return
        if self._tools_lock is None:
            self._tools_lock = asyncio.Lock()
        async with self._tools_lock:
            if self._tools_pending:
                self.tools = await MCPTools.load(self.cfg.mcp_server)
                self._tools_pending = False

    def conversation(self, device_id: str | None = None) -> Conversation:
        """A new conversation; the device server passes the device id (the conversation
        itself does not depend on it: prompts and history are per conversation)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.http.aclose()

    def extra_with_tools(self, mcp: list[Msg]) -> Msg:
        """``llm.extra`` with the MCP tools ``mcp`` appended to its ``tools`` and
        ``tool_choice: "auto"`` whenever there are tools."""
        extra = dict(self.extra)
        if mcp or isinstance(extra.get("tools"), list):
            given = extra.get("tools")
            extra["tools"] = (list(given) if isinstance(given, list) else []) + mcp
            extra["tool_choice"] = "auto"
        return extra


class OpenAIBackend(LLMBackend):
    """An :class:`LLMBackend` whose requests go over HTTP to ``cfg.url`` (the ``openai`` SDK's
    client, with the timeouts of the module docstring)."""

    def __init__(
        self,
        cfg: Any,
        *,
        tools: MCPTools | None = None,
        connect_timeout: float | None = 10.0,
        first_token_timeout: float | None = 60.0,
        idle_timeout: float | None = 30.0,
        include_cache: IncludeCache | None = None,
        prompt_timeout: float = 10.0,
        max_json_bytes: int = 1 << 20,
    ) -> None:
        super().__init__(
            cfg, tools=tools, include_cache=include_cache, prompt_timeout=prompt_timeout
        )
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.max_json_bytes = max_json_bytes
        self.key = (cfg.api_key or "").strip()
        import openai  # here, not at the top: the SDK takes ~1 s to import, a config load none

        # The SDK insists on a key; without one the Authorization header is omitted per request.
        self.client = openai.AsyncOpenAI(
            api_key=self.key or "no-key",
            base_url=cfg.url,
            max_retries=0,
            timeout=httpx.Timeout(None, connect=connect_timeout),
            http_client=http.sdk_client(httpx.Timeout(None, connect=connect_timeout)),
            default_headers={"User-Agent": http.USER_AGENT},
            organization=None,
            project=None,
        )

    async def aclose(self) -> None:
        await super().aclose()
        await self.client.close()


async def stream(
    be: OpenAIBackend,
    body: Msg,
    *,
    progress: Callable[[Msg], bool],
    whole: Callable[[Msg], list[Msg]],
) -> AsyncIterator[Msg]:
    """POST ``body`` to ``be.cfg.url`` and yield the JSON objects of the SSE stream (parsed by
    the openai SDK's SSE decoder; non-object data is skipped), with the backend's deadlines:
    the response headers and the first object with content (``progress(obj)``) within
    ``first_token_timeout``, each later one with content within ``idle_timeout`` of the one
    before. An answer that is one JSON body instead of a stream is yielded as the objects
    ``whole(body)`` makes of it. Every failure is a BackendError with a notice."""
    import openai  # loaded by OpenAIBackend already (see there)

    url = be.cfg.url
    headers: dict[str, Any] = {} if be.key else {"Authorization": openai.omit}
    first = True
    limit = be.first_token_timeout
    deadline = None if limit is None else anyio.current_time() + limit

    def left() -> float | None:
        return None if deadline is None else deadline - anyio.current_time()

    def late() -> BackendError:
        what = "first token" if first else "next token"
        return BackendError(
            f"LLM {url}: no {what} within {limit} s", notice=NOTICES.timeout, backend="llm"
        )

    try:
        with anyio.fail_after(left()):
            stream = await be.client.post(
                url,
                cast_to=object,
                body=body,
                options={"headers": headers},
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
    except TimeoutError as exc:
        raise BackendError(
            f"LLM {url}: no response within {be.first_token_timeout} s",
            notice=NOTICES.timeout,
            backend="llm",
        ) from exc
    except openai.APIStatusError as exc:
        raise status_error(exc) from exc
    except openai.APITimeoutError as exc:
        raise BackendError(
            f"LLM {url}: connect timeout", notice=NOTICES.unreachable, backend="llm"
        ) from exc
    except openai.APIConnectionError as exc:
        raise BackendError(
            f"LLM {url}: {exc.__cause__ or exc}", notice=NOTICES.unreachable, backend="llm"
        ) from exc
    try:
        if _is_json(stream.response):
            for obj in whole(await _read_json(be, stream.response, left(), late)):
                yield obj
            return
        it = stream.__aiter__()
        while True:
            try:
                # asyncio's timeout, not anyio's fail_after: one per event, ~3.6 us of the
                # event loop against ~10 (the deadline is the loop's clock, as anyio's)
                async with asyncio.timeout_at(deadline):
                    chunk = await it.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise late() from exc
            if isinstance(chunk, dict):
                if progress(chunk):
                    first = False
                    limit = be.idle_timeout
                    deadline = None if limit is None else anyio.current_time() + limit
                yield chunk
    except openai.APITimeoutError as exc:
        raise BackendError(
            f"LLM {url}: read timeout", notice=NOTICES.timeout, backend="llm"
        ) from exc
    except openai.APIConnectionError as exc:
        raise BackendError(
            f"LLM {url}: stream broken: {exc.__cause__ or exc}",
            notice=NOTICES.cut,
            backend="llm",
        ) from exc
    except openai.APIError as exc:  # an {"error": ...} event inside the stream
        raise BackendError(
            f"LLM {url}: error in stream: {exc}", notice=NOTICES.cut, backend="llm"
        ) from exc
    except ValueError as exc:  # unparsable JSON in a data line
        raise BackendError(
            f"LLM {url}: bad stream data: {exc}", notice=NOTICES.cut, backend="llm"
        ) from exc
    finally:
        await stream.close()


def _is_json(response: Any) -> bool:
    """Whether the answer is a JSON body (``application/json`` ...) rather than a stream."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return media.endswith("json")


async def _read_json(
    be: OpenAIBackend, response: Any, left: float | None, late: Callable[[], BackendError]
) -> Msg:
    """A non-streamed answer: its JSON object (at most ``max_json_bytes``, within ``left``
    seconds)."""
    url = be.cfg.url
    try:
        with anyio.fail_after(left):
            raw = await http.read_body(response, be.max_json_bytes, NOTICES, f"LLM {url}")
    except TimeoutError as exc:
        raise late() from exc
    except BackendError:
        raise
    except Exception as exc:  # the SDK's HTTP client's transport errors (httpx2)
        raise BackendError(
            f"LLM {url}: answer broken: {exc!r}", notice=NOTICES.cut, backend="llm"
        ) from exc
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BackendError(
            f"LLM {url}: not a JSON object: {raw[:200]!r}",
            notice=NOTICES.bad_answer,
            backend="llm",
        )
    if data.get("error"):
        raise BackendError(
            f"LLM {url}: error answer: {str(data['error'])[:300]}",
            notice=NOTICE_FAILED,
            backend="llm",
        )
    return data

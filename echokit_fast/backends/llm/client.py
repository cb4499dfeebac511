"""What both OpenAI LLM platforms share: :class:`OpenAIBackend` (the HTTP clients, the
timeouts, ``extra``, the MCP tools) and :func:`stream` (one streamed request, every failure a
BackendError with a notice).

Requests go through the ``openai`` SDK's raw ``post`` to ``llm.url`` (the full endpoint, used as
is), ``User-Agent: curl/7.81.0``, ``Authorization: Bearer <api_key>`` only with a key (exactly one
``Bearer``: the config loader strips a ``Bearer `` prefix). Timeouts (the reference has none):
connecting ``connect_timeout`` (10 s), the first event ``first_token_timeout`` (60 s: local
servers may load a model first), each later one ``idle_timeout`` (60 s). ``None`` disables one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from echokit_fast.backends import http
from echokit_fast.backends.base import BackendError, Conversation
from echokit_fast.backends.llm.errors import NOTICES, status_error
from echokit_fast.backends.llm.includes import IncludeCache
from echokit_fast.backends.llm.mcp import MCPTools
from echokit_fast.backends.llm.prompts import Msg

__all__ = ["MAX_TOOL_ROUNDS", "OpenAIBackend", "stream"]

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 8


class OpenAIBackend:
    """What all conversations of one ``[llm]`` share. Create inside the running event loop;
    :meth:`aclose` at shutdown. Subclasses give :meth:`conversation`."""

    #: ``extra`` keys the server sets itself (ignored with a warning)
    reserved_extra: tuple[str, ...] = ()

    def __init__(
        self,
        cfg: Any,
        *,
        tools: MCPTools | None = None,
        connect_timeout: float | None = 10.0,
        first_token_timeout: float | None = 60.0,
        idle_timeout: float | None = 60.0,
        include_cache: IncludeCache | None = None,
        prompt_timeout: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.tools = tools if tools is not None else MCPTools()
        # MCP tools are listed on first use (needs the event loop), once.
        self._tools_pending = tools is None and bool(cfg.mcp_server)
        self._tools_lock: asyncio.Lock | None = None
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.include_cache = include_cache if include_cache is not None else IncludeCache()
        self.http = http.client(prompt_timeout, follow_redirects=True)
        self.key = (cfg.api_key or "").strip()
        import openai  # here, not at the top: the SDK takes ~1 s to import, a config load none

        # The SDK insists on a key; without one the Authorization header is omitted per request.
        self.client = openai.AsyncOpenAI(
            api_key=self.key or "no-key",
            base_url=cfg.url,
            max_retries=0,
            timeout=httpx.Timeout(None, connect=connect_timeout),
            default_headers={"User-Agent": http.USER_AGENT},
            organization=None,
            project=None,
        )
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
        await self.client.close()

    def extra_with_tools(self, mcp: list[Msg]) -> Msg:
        """``llm.extra`` with the MCP tools ``mcp`` appended to its ``tools`` and
        ``tool_choice: "auto"`` whenever there are tools."""
        extra = dict(self.extra)
        if mcp or isinstance(extra.get("tools"), list):
            given = extra.get("tools")
            extra["tools"] = (list(given) if isinstance(given, list) else []) + mcp
            extra["tool_choice"] = "auto"
        return extra


async def stream(be: OpenAIBackend, body: Msg) -> AsyncIterator[Msg]:
    """POST ``body`` to ``be.cfg.url`` and yield the JSON objects of the SSE stream (parsed by
    the openai SDK's SSE decoder; non-object data is skipped), with the backend's timeouts:
    one deadline covers the response headers and the first event, ``idle_timeout`` each later
    one. Every failure is a BackendError with a notice."""
    import openai  # loaded by OpenAIBackend already (see there)

    headers: dict[str, Any] = {} if be.key else {"Authorization": openai.omit}
    t0 = anyio.current_time()
    first_deadline = None if be.first_token_timeout is None else t0 + be.first_token_timeout
    try:
        with anyio.fail_after(be.first_token_timeout):
            stream = await be.client.post(
                be.cfg.url,
                cast_to=object,
                body=body,
                options={"headers": headers},
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
    except TimeoutError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: no response within {be.first_token_timeout} s",
            notice=NOTICES.timeout,
            backend="llm",
        ) from exc
    except openai.APIStatusError as exc:
        raise status_error(exc) from exc
    except openai.APITimeoutError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: connect timeout", notice=NOTICES.unreachable, backend="llm"
        ) from exc
    except openai.APIConnectionError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: {exc.__cause__ or exc}",
            notice=NOTICES.unreachable,
            backend="llm",
        ) from exc
    try:
        first = True
        it = stream.__aiter__()
        while True:
            if first:
                limit = be.first_token_timeout
                left = None if first_deadline is None else first_deadline - anyio.current_time()
            else:
                limit = left = be.idle_timeout
            try:
                with anyio.fail_after(left):
                    chunk = await it.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                what = "first token" if first else "next token"
                raise BackendError(
                    f"LLM {be.cfg.url}: no {what} within {limit} s",
                    notice=NOTICES.timeout,
                    backend="llm",
                ) from exc
            first = False
            if isinstance(chunk, dict):
                yield chunk
    except openai.APITimeoutError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: read timeout", notice=NOTICES.timeout, backend="llm"
        ) from exc
    except openai.APIConnectionError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: stream broken: {exc.__cause__ or exc}",
            notice=NOTICES.cut,
            backend="llm",
        ) from exc
    except openai.APIError as exc:  # an {"error": ...} event inside the stream
        raise BackendError(
            f"LLM {be.cfg.url}: error in stream: {exc}", notice=NOTICES.cut, backend="llm"
        ) from exc
    except ValueError as exc:  # unparsable JSON in a data line
        raise BackendError(
            f"LLM {be.cfg.url}: bad stream data: {exc}", notice=NOTICES.cut, backend="llm"
        ) from exc
    finally:
        await stream.close()

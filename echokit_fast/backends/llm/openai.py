"""The LLM side of a turn: ``openai_chat`` (spec §5.6, §6.8) and ``openai_responses`` (§5.7)
through the ``openai`` package.

``openai_responses`` (:class:`ResponsesBackend`, :class:`OpenAIResponses`, at the end of this
module) shares the clients, timeouts, error notices, includes and MCP tools described below; its
request, chaining and tool rounds are described on those classes.

:class:`ChatBackend` is created once per process from an :class:`~echokit_fast.config.OpenAIChatLLM`
and holds what all devices share (the HTTP clients, the 60 s include cache, the MCP tools);
``backend.conversation()`` gives one device's :class:`OpenAIChat` (a
:class:`~echokit_fast.backends.base.Conversation`): prompts, history and tool calls.

Request (§5.6): ``POST llm.url`` (the full endpoint, used as is), ``User-Agent: curl/7.81.0``,
``Authorization: Bearer <api_key>`` only with a key (exactly one ``Bearer``: the config loader
strips a ``Bearer `` prefix, §10.14). The body keys in the reference's order: ``stream``, the
``extra`` keys, ``messages``, ``model`` (omitted when empty); with tools, ``tools`` (the
``extra`` tools plus the MCP tools) and ``tool_choice: "auto"``. ``extra`` keys named
``stream``, ``messages`` or ``model`` are ignored (ours win, as with the reference's duplicate
JSON keys read last-wins). The body is sent through the SDK's raw ``post`` so that key order,
the endpoint URL and an omitted ``model`` are exactly as configured; ``chat.completions.create``
would force a ``model`` and a ``/chat/completions`` suffix.

History (§5.6, with the ``history = 0`` bug fixed, §10.10):

* the history starts as a copy of ``dynamic_prompts`` (few-shot) and ``sys_prompts`` always
  come first, never trimmed;
* before a new user message, a dangling user message (previous turn failed or was
  interrupted) is removed; after appending it, if the history is longer than ``2 x history``,
  one entry is removed from the front (then any ``tool`` messages left at the front without
  their assistant ``tool_calls`` message, which every OpenAI-compatible server rejects);
* the assistant text is appended when the reply completes (only if non-empty, like the
  reference); on any error or cancellation everything the turn added after the user message
  (tool calls, tool results) is removed again, so the next turn drops the dangling user message;
* ``history = 0``: nothing is kept between turns: every request is the prompts
  (``sys_prompts`` + ``dynamic_prompts``) plus the current user message (and this turn's tool
  exchange). The reference removed the user message itself, sending only the system prompt.

Prompts (§5.6) are (re)loaded lazily on the first reply after creation or :meth:`reset` (or
eagerly with :meth:`OpenAIChat.load_prompts`): ``prompts_url`` (JSON with ``sys_prompts`` and
``dynamic_prompts``) replaces the configured ones when it works; then every
``{{ http(s)://... }}`` in the first system prompt is replaced by the body GET returns (200 only;
otherwise by the bare URL), bodies cached 60 s, at most 100 URLs.

Timeouts (the reference has none, §5.12): connecting ``connect_timeout`` (10 s), the first
delta ``first_token_timeout`` (60 s: local servers may load a model first), each later delta
``idle_timeout`` (60 s). ``None`` disables one.

Tool calls (§6.8): OpenAI-style incremental deltas are assembled by ``index`` (the reference
executed the first fragment with empty arguments, §10.9); whole calls in one delta (llama.cpp /
LlamaEdge) work too. MCP tools come from :class:`MCPTools`; while a tool with a
``call_mcp_message`` runs, that message is yielded as :class:`~echokit_fast.backends.base.SpeakNow`.
The text before the calls is kept as the content of the assistant ``tool_calls`` message (the
reference stored ``""`` and lost it).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import openai

from echokit_fast.backends.base import BackendError, SpeakNow
from echokit_fast.config import Message, OpenAIChatLLM, OpenAIResponsesLLM

__all__ = [
    "USER_AGENT",
    "ChatBackend",
    "IncludeCache",
    "MCPTools",
    "OpenAIChat",
    "OpenAIResponses",
    "ResponsesBackend",
    "ToolCallAssembler",
    "expand_includes",
]

log = logging.getLogger(__name__)

USER_AGENT = "curl/7.81.0"
INCLUDE_TTL = 60.0
INCLUDE_MAX = 100
MAX_TOOL_ROUNDS = 8
_INCLUDE_RE = re.compile(r"\{\{(\s*https?://\S+?\s*)\}\}")
_RESERVED_EXTRA = ("stream", "messages", "model")

Msg = dict[str, Any]


def _msg(m: Message | Msg) -> Msg:
    if isinstance(m, Message):
        return {"role": m.role, "content": m.content}
    return {"role": m.get("role", "assistant"), "content": m.get("content", "") or ""}


# --------------------------------------------------------------------------------------------
# Prompt includes
# --------------------------------------------------------------------------------------------


class IncludeCache:
    """Bodies of ``{{url}}`` includes: ``ttl`` seconds, at most ``max_entries`` URLs (LRU).
    Only successful (HTTP 200) fetches are cached."""

    def __init__(
        self,
        *,
        ttl: float = INCLUDE_TTL,
        max_entries: int = INCLUDE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, url: str) -> str | None:
        hit = self._data.get(url)
        if hit is None:
            return None
        if hit[0] <= self.clock():
            del self._data[url]
            return None
        self._data.move_to_end(url)
        return hit[1]

    def put(self, url: str, body: str) -> None:
        self._data[url] = (self.clock() + self.ttl, body)
        self._data.move_to_end(url)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


async def expand_includes(text: str, http: httpx.AsyncClient, cache: IncludeCache) -> str:
    """Replace every ``{{ http(s)://... }}`` in ``text`` by the body GET returns (status 200;
    otherwise, or on a transport error, by the URL itself). Each URL is fetched once."""
    urls = [m.group(1).strip() for m in _INCLUDE_RE.finditer(text)]
    bodies: dict[str, str] = {}
    for url in dict.fromkeys(urls):
        body = cache.get(url)
        if body is None:
            try:
                resp = await http.get(url)
                if resp.status_code == 200:
                    body = resp.text
                    cache.put(url, body)
                else:
                    log.warning("prompt include %s: HTTP %d", url, resp.status_code)
            except httpx.HTTPError as exc:
                log.warning("prompt include %s: %s", url, exc)
        if body is not None:
            bodies[url] = body
    return _INCLUDE_RE.sub(lambda m: bodies.get(m.group(1).strip(), m.group(1).strip()), text)


# --------------------------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------------------------


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: str = ""


class ToolCallAssembler:
    """Collects tool calls from streamed ``delta.tool_calls`` fragments.

    OpenAI style: fragments carry an ``index``; the first has ``id`` and ``function.name``,
    later ones pieces of ``function.arguments`` to concatenate. Fragments without ``index``
    (servers that send whole calls in one delta) start a new call when they carry a new
    ``id``, else continue the last one.
    """

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._by_index: dict[Any, _Call] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragments: list[dict[str, Any]]) -> None:
        for frag in fragments:
            if not isinstance(frag, dict):
                continue
            index = frag.get("index")
            fid = frag.get("id") or ""
            if index is not None:
                call = self._by_index.get(index)
                if call is None:
                    call = self._by_index[index] = _Call()
                    self._calls.append(call)
            elif fid and (not self._calls or self._calls[-1].id not in ("", fid)):
                call = _Call()
                self._calls.append(call)
            elif self._calls:
                call = self._calls[-1]
            else:
                call = _Call()
                self._calls.append(call)
            if fid and not call.id:
                call.id = fid
            fn = frag.get("function") or {}
            name = fn.get("name")
            if name and not call.name:
                call.name = name
            args = fn.get("arguments")
            if isinstance(args, str):
                call.arguments += args
            elif isinstance(args, dict):  # some servers send an object
                call.arguments += json.dumps(args)

    def calls(self) -> list[Msg]:
        """The assembled calls as OpenAI ``tool_calls`` entries (ids made up where missing)."""
        out = []
        for i, c in enumerate(self._calls):
            out.append(
                {
                    "id": c.id or f"call_{i}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments or "{}"},
                }
            )
        return out


@dataclass
class MCPTool:
    name: str
    description: str
    parameters: dict[str, Any]
    server: str
    transport: str
    call_message: str = ""


@dataclass
class MCPTools:
    """Tools of the configured ``[[llm.mcp_server]]`` entries (§6.8), loaded by :meth:`load`.

    Each call opens its own short MCP session to the tool's server (no long-lived
    connection to keep alive or to leak across event loops).
    """

    tools: dict[str, MCPTool] = field(default_factory=dict)

    @classmethod
    async def load(cls, servers: list[Any], *, timeout: float = 10.0) -> MCPTools:
        """``tools/list`` (all pages) on every server; failures are logged and skipped; a
        later tool with the same name replaces an earlier one."""
        from mcp.types import PaginatedRequestParams

        out = cls()
        for srv in servers:
            try:
                with anyio.fail_after(timeout):
                    async with _mcp_session(srv.server, srv.type) as session:
                        cursor = None
                        while True:
                            params = PaginatedRequestParams(cursor=cursor) if cursor else None
                            page = await session.list_tools(params=params)
                            for t in page.tools:
                                out.tools[t.name] = MCPTool(
                                    name=t.name,
                                    description=t.description or "",
                                    parameters=dict(t.input_schema or {}),
                                    server=srv.server,
                                    transport=srv.type,
                                    call_message=srv.call_mcp_message,
                                )
                            cursor = page.next_cursor
                            if not cursor:
                                break
            except Exception as exc:
                log.warning("MCP server %s: cannot list tools: %s", srv.server, exc)
        return out

    def responses_tools(self) -> list[Msg]:
        """The tools in the Responses API's function-tool shape (flat, no ``function`` key)."""
        return [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
            }
            for t in self.tools.values()
        ]

    def openai_tools(self) -> list[Msg]:
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in self.tools.values()
        ]

    async def call(self, name: str, arguments: str, *, timeout: float | None = 60.0) -> list[str]:
        """Run tool ``name``; the ``tool`` message contents (§6.8). A transport failure raises
        BackendError."""
        tool = self.tools.get(name)
        if tool is None:
            return [f"Tool call {name} failed, tool not found"]
        try:
            args = json.loads(arguments) if arguments else {}
        except ValueError:
            args = {}
        if not isinstance(args, dict):
            args = {}
        try:
            with anyio.fail_after(timeout):
                async with _mcp_session(tool.server, tool.transport) as session:
                    result = await session.call_tool(name, args)
        except Exception as exc:
            raise BackendError(
                f"MCP tool {name} at {tool.server}: {exc!r}",
                notice="A tool the assistant needed is not available.",
                backend="mcp",
            ) from exc
        if result.is_error:
            return [f"Tool call {name} failed, mcp call error"]
        out = []
        for item in result.content:
            text = getattr(item, "text", None)
            if getattr(item, "type", None) != "text" or text is None:
                continue  # images and resources are ignored, as in the reference
            try:
                out.append(json.dumps(json.loads(text), indent=2, ensure_ascii=False))
            except ValueError:
                out.append(text)
        return out


def _mcp_session(url: str, transport: str) -> Any:
    """An async context manager yielding an initialised ``mcp.ClientSession``."""
    from contextlib import asynccontextmanager

    from mcp import ClientSession
    from mcp.types import Implementation

    @asynccontextmanager
    async def session() -> AsyncIterator[Any]:
        info = Implementation(name=f"echokit-fast {transport} client", version="0.1.0")
        if transport == "sse":
            from mcp.client.sse import sse_client

            streams_cm = sse_client(url)
        else:
            from mcp.client.streamable_http import streamable_http_client

            streams_cm = streamable_http_client(url)
        async with streams_cm as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write, client_info=info) as s:
                await s.initialize()
                yield s

    return session()


# --------------------------------------------------------------------------------------------
# Backend and conversation
# --------------------------------------------------------------------------------------------


class ChatBackend:
    """What all conversations of one ``[llm]`` share. Create inside the running event loop;
    :meth:`aclose` at shutdown."""

    #: ``extra`` keys the server sets itself (ignored with a warning)
    reserved_extra: tuple[str, ...] = _RESERVED_EXTRA

    def __init__(
        self,
        cfg: OpenAIChatLLM | OpenAIResponsesLLM,
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
        self.http = httpx.AsyncClient(timeout=prompt_timeout, follow_redirects=True)
        self.key = (cfg.api_key or "").strip()
        # The SDK insists on a key; without one the Authorization header is omitted per request.
        self.client = openai.AsyncOpenAI(
            api_key=self.key or "no-key",
            base_url=cfg.url,
            max_retries=0,
            timeout=httpx.Timeout(None, connect=connect_timeout),
            default_headers={"User-Agent": USER_AGENT},
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
    async def create(cls, cfg: OpenAIChatLLM | OpenAIResponsesLLM, **kw: Any) -> Any:
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

    def conversation(self, device_id: str | None = None) -> OpenAIChat:
        """A new conversation; the device server passes the device id (the conversation
        itself does not depend on it: prompts and history are per conversation)."""
        return OpenAIChat(self)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.client.close()

    def extra_with_tools(self, mcp: list[Msg]) -> Msg:
        """``llm.extra`` with the MCP tools ``mcp`` appended to its ``tools`` and
        ``tool_choice: "auto"`` whenever there are tools (§5.6)."""
        extra = dict(self.extra)
        if mcp or isinstance(extra.get("tools"), list):
            given = extra.get("tools")
            extra["tools"] = (list(given) if isinstance(given, list) else []) + mcp
            extra["tool_choice"] = "auto"
        return extra

    def body(self, messages: list[Msg]) -> Msg:
        """The request body for ``messages``, keys in the reference's order."""
        extra = self.extra_with_tools(self.tools.openai_tools())
        body: Msg = {"stream": True, **extra, "messages": messages}
        if self.cfg.model:
            body["model"] = self.cfg.model
        return body

    async def load_prompts(self) -> tuple[list[Msg], list[Msg]]:
        """``(sys_prompts, dynamic_prompts)``: from ``prompts_url`` when it works, else the
        configured ones; includes of the first system prompt expanded."""
        cfg = self.cfg
        sys_prompts = [_msg(m) for m in cfg.sys_prompts]
        dynamic = [_msg(m) for m in cfg.dynamic_prompts]
        if cfg.prompts_url:
            try:
                resp = await self.http.get(cfg.prompts_url)
                if resp.status_code != 200:
                    raise ValueError(f"HTTP {resp.status_code}: {resp.text[:200]}")
                data = resp.json()
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                got_sys = [_msg(Message.model_validate(m)) for m in data["sys_prompts"]]
                got_dyn = [_msg(Message.model_validate(m)) for m in data["dynamic_prompts"]]
                sys_prompts, dynamic = got_sys, got_dyn
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "prompts_url %s: %s; using the configured prompts", cfg.prompts_url, exc
                )
        if sys_prompts and sys_prompts[0]["role"] == "system":
            sys_prompts[0]["content"] = await expand_includes(
                sys_prompts[0]["content"], self.http, self.include_cache
            )
        return sys_prompts, dynamic


_NOTICE_UNREACHABLE = "The language model is not reachable."
_NOTICE_TIMEOUT = "The language model did not answer in time."
_NOTICE_CUT = "The language model's answer was cut off."


def _status_error(exc: openai.APIStatusError) -> BackendError:
    status = exc.status_code
    body = ""
    try:
        body = exc.response.text[:500]
    except Exception:
        body = str(exc.body)[:500]
    if status in (401, 403):
        notice = f"The language model refused the API key (HTTP {status})."
    elif status == 429:
        notice = "The language model is busy (HTTP 429). Please try again shortly."
    elif status >= 500:
        notice = f"The language model failed (HTTP {status})."
    else:
        notice = f"The language model rejected the request (HTTP {status})."
    return BackendError(f"LLM HTTP {status}: {body}", notice=notice, backend="llm")


class OpenAIChat:
    """One device's conversation (a :class:`~echokit_fast.backends.base.Conversation`)."""

    def __init__(self, backend: ChatBackend) -> None:
        self.backend = backend
        self.limit = backend.cfg.history
        self._sys: list[Msg] = [_msg(m) for m in backend.cfg.sys_prompts]
        self._dynamic: list[Msg] = [_msg(m) for m in backend.cfg.dynamic_prompts]
        self._history: list[Msg] = copy.deepcopy(self._dynamic)
        self._loaded = False

    # -- prompts and history -----------------------------------------------------------------

    @property
    def sys_prompts(self) -> list[Msg]:
        return copy.deepcopy(self._sys)

    @property
    def history(self) -> list[Msg]:
        """A copy of the history (without the system prompts)."""
        return copy.deepcopy(self._history)

    def reset(self) -> None:
        """Back to the configured prompts; they are (re)loaded before the next reply."""
        self._history = copy.deepcopy(self._dynamic)
        self._loaded = False

    async def load_prompts(self) -> None:
        """(Re)load the prompts now (``prompts_url``, includes) and restart the history."""
        self._sys, self._dynamic = await self.backend.load_prompts()
        self._history = copy.deepcopy(self._dynamic)
        self._loaded = True

    def _add_user(self, text: str) -> None:
        hist = self._history
        if self.limit == 0:
            hist[:] = copy.deepcopy(self._dynamic)
        elif hist and hist[-1]["role"] == "user":
            hist.pop()
        hist.append({"role": "user", "content": text})
        if self.limit and len(hist) > 2 * self.limit:
            del hist[0]
            while len(hist) > 1 and hist[0]["role"] == "tool":
                del hist[0]

    # -- the reply ---------------------------------------------------------------------------

    async def reply(self, user_text: str) -> AsyncIterator[str | SpeakNow]:
        """Stream the answer to ``user_text`` (text deltas, SpeakNow items). Raises
        BackendError; on error or cancellation only the user message stays in the history."""
        await self.backend.ensure_tools()
        if not self._loaded:
            await self.load_prompts()
        self._add_user(user_text)
        mark = len(self._history)
        done = False
        try:
            text_all: list[str] = []
            for _round in range(MAX_TOOL_ROUNDS + 1):
                text: list[str] = []
                tools = ToolCallAssembler()
                async with aclosing(self._complete(tools)) as deltas:
                    async for delta in deltas:
                        text.append(delta)
                        yield delta
                text_all += text
                if not tools:
                    break
                calls = tools.calls()
                self._history.append(
                    {"role": "assistant", "content": "".join(text), "tool_calls": calls}
                )
                for call in calls:
                    name = call["function"]["name"]
                    tool = self.backend.tools.tools.get(name)
                    if tool is not None and tool.call_message:
                        yield SpeakNow(tool.call_message)
                    contents = await self.backend.tools.call(name, call["function"]["arguments"])
                    for content in contents:
                        self._history.append(
                            {"role": "tool", "content": content, "tool_call_id": call["id"]}
                        )
                text_all.clear()
            else:
                raise BackendError(
                    f"more than {MAX_TOOL_ROUNDS} rounds of tool calls in one reply",
                    notice="The assistant got stuck calling tools.",
                    backend="llm",
                )
            answer = "".join(text_all)
            if self.limit == 0:
                self._history[:] = copy.deepcopy(self._dynamic)
            elif answer:
                self._history.append({"role": "assistant", "content": answer})
            done = True
        finally:
            if not done:
                del self._history[mark:]

    async def _complete(self, tools: ToolCallAssembler) -> AsyncIterator[str]:
        """One streamed completion over the current history: yields content deltas, collects
        tool-call fragments into ``tools``."""
        body = self.backend.body(self._sys + self._history)
        async with aclosing(_stream(self.backend, body)) as chunks:
            async for chunk in chunks:
                choices = chunk.get("choices")
                if not choices or not isinstance(choices[0], dict):
                    continue
                delta = choices[0].get("delta") or {}
                content = delta.get("content")
                if isinstance(content, str) and content:
                    yield content
                fragments = delta.get("tool_calls")
                if isinstance(fragments, list) and fragments:
                    tools.add(fragments)


async def _stream(be: ChatBackend, body: Msg) -> AsyncIterator[Msg]:
    """POST ``body`` to ``be.cfg.url`` and yield the JSON objects of the SSE stream (parsed by
    the openai SDK's SSE decoder; non-object data is skipped), with the backend's timeouts:
    one deadline covers the response headers and the first event, ``idle_timeout`` each later
    one. Every failure is a BackendError with a notice."""
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
            notice=_NOTICE_TIMEOUT,
            backend="llm",
        ) from exc
    except openai.APIStatusError as exc:
        raise _status_error(exc) from exc
    except openai.APITimeoutError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: connect timeout", notice=_NOTICE_UNREACHABLE, backend="llm"
        ) from exc
    except openai.APIConnectionError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: {exc.__cause__ or exc}",
            notice=_NOTICE_UNREACHABLE,
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
                    notice=_NOTICE_TIMEOUT,
                    backend="llm",
                ) from exc
            first = False
            if isinstance(chunk, dict):
                yield chunk
    except openai.APITimeoutError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: read timeout", notice=_NOTICE_TIMEOUT, backend="llm"
        ) from exc
    except openai.APIConnectionError as exc:
        raise BackendError(
            f"LLM {be.cfg.url}: stream broken: {exc.__cause__ or exc}",
            notice=_NOTICE_CUT,
            backend="llm",
        ) from exc
    except openai.APIError as exc:  # an {"error": ...} event inside the stream
        raise BackendError(
            f"LLM {be.cfg.url}: error in stream: {exc}", notice=_NOTICE_CUT, backend="llm"
        ) from exc
    except ValueError as exc:  # unparsable JSON in a data line
        raise BackendError(
            f"LLM {be.cfg.url}: bad stream data: {exc}", notice=_NOTICE_CUT, backend="llm"
        ) from exc
    finally:
        await stream.close()


# --------------------------------------------------------------------------------------------
# openai_responses (spec §5.7)
# --------------------------------------------------------------------------------------------

_RESPONSES_RESERVED = ("model", "previous_response_id", "instructions", "input", "stream")
_NOTICE_FAILED = "The language model could not answer."


class ResponsesBackend(ChatBackend):
    """What all ``openai_responses`` conversations share (§5.7): the same clients, include
    cache and MCP tools as :class:`ChatBackend` (the reference never loaded the tools for this
    platform, §10.8). :meth:`conversation` gives an :class:`OpenAIResponses`."""

    reserved_extra = _RESPONSES_RESERVED
    cfg: OpenAIResponsesLLM

    def conversation(self, device_id: str | None = None) -> OpenAIResponses:  # type: ignore[override]
        return OpenAIResponses(self)

    def responses_body(self, previous_id: str | None, instructions: str, input_: Any) -> Msg:
        """``{model, previous_response_id?, instructions?, input, ...extra, stream}`` plus
        ``tools`` (the ``extra`` tools, then the MCP tools) and ``tool_choice: "auto"`` when
        there are tools (§5.6's merging, in the Responses function-tool shape)."""
        body: Msg = {}
        if self.cfg.model:
            body["model"] = self.cfg.model
        if previous_id:
            body["previous_response_id"] = previous_id
        if instructions:
            body["instructions"] = instructions
        body["input"] = input_
        body.update(self.extra_with_tools(self.tools.responses_tools()))
        body["stream"] = True
        return body

    async def load_instructions(self) -> str:
        """The content of the first ``sys_prompts`` entry if its role is ``system`` (includes
        expanded), else ``llm.instructions``."""
        prompts = self.cfg.sys_prompts
        if prompts and prompts[0].role == "system":
            return await expand_includes(prompts[0].content, self.http, self.include_cache)
        return self.cfg.instructions


@dataclass
class _Turn:
    """What one streamed response gave: its id (from ``response.completed``) and the
    function calls of its ``response.output_item.done`` events."""

    id: str | None = None
    calls: list[Msg] = field(default_factory=list)


class OpenAIResponses:
    """One device's ``openai_responses`` conversation (a
    :class:`~echokit_fast.backends.base.Conversation`). The provider keeps the history: each turn
    chains to the previous one by ``previous_response_id``.

    * The first turn (and the first after :meth:`reset`) sends no ``previous_response_id``;
      later turns send the id of the last completed turn. Every request carries the
      ``instructions``: the Responses API does not carry them over a ``previous_response_id``,
      so the reference (which sends them on the first turn only) loses its system prompt from
      the second turn on.
    * Tool calls (fixed, §10.8): when a response ends with ``function_call`` items, each
      call's ``call_mcp_message`` is yielded as :class:`~echokit_fast.backends.base.SpeakNow`, the
      tool runs through MCP, and a new request chained to *that* response's id posts the
      ``function_call_output`` items; its stream is read on (at most ``MAX_TOOL_ROUNDS``).
    * A failed, cut or cancelled turn leaves :attr:`previous_id` at the last completed turn,
      so the chain stays valid. A stream that ends without ``response.completed`` is an error
      (the answer was cut, and there is no id to chain to).
    """

    def __init__(self, backend: ResponsesBackend) -> None:
        self.backend = backend
        #: the ``response.id`` of the last completed turn (None: the next turn is a first one)
        self.previous_id: str | None = None
        self.instructions = ""
        self._loaded = False

    def reset(self) -> None:
        """Start a new chain: the next turn sends the instructions (reloaded) again."""
        self.previous_id = None
        self._loaded = False

    async def load_prompts(self) -> None:
        """(Re)load the instructions now (includes expanded) and start a new chain."""
        self.instructions = await self.backend.load_instructions()
        self.previous_id = None
        self._loaded = True

    async def reply(self, user_text: str) -> AsyncIterator[str | SpeakNow]:
        """Stream the answer to ``user_text`` (text deltas, SpeakNow items). Raises
        BackendError; :attr:`previous_id` changes only when the whole turn completed."""
        be = self.backend
        await be.ensure_tools()
        if not self._loaded:
            await self.load_prompts()
        previous = self.previous_id
        instructions = self.instructions  # on every request: they are not carried over
        input_: Any = user_text
        for _round in range(MAX_TOOL_ROUNDS + 1):
            turn = _Turn()
            body = be.responses_body(previous, instructions, input_)
            async with aclosing(self._respond(body, turn)) as deltas:
                async for delta in deltas:
                    yield delta
            if not turn.calls:
                self.previous_id = turn.id
                return
            outputs = []
            for call in turn.calls:
                tool = be.tools.tools.get(call["name"])
                if tool is not None and tool.call_message:
                    yield SpeakNow(tool.call_message)
                contents = await be.tools.call(call["name"], call["arguments"])
                outputs.append(
                    {
                        "type": "function_call_output",
                        "call_id": call["call_id"],
                        "output": "\n".join(contents),
                    }
                )
            # The outputs answer the calls of *this* response (the reference chained them to
            # the previous turn's id and kept reading the old stream, §10.8).
            previous, input_ = turn.id, outputs
        raise BackendError(
            f"more than {MAX_TOOL_ROUNDS} rounds of tool calls in one reply",
            notice="The assistant got stuck calling tools.",
            backend="llm",
        )

    async def _respond(self, body: Msg, turn: _Turn) -> AsyncIterator[str]:
        """One streamed response: yields ``response.output_text.delta`` texts, records the
        function calls and the completed response's id in ``turn``."""
        url = self.backend.cfg.url
        async with aclosing(_stream(self.backend, body)) as events:
            async for ev in events:
                kind = ev.get("type")
                if kind == "response.output_text.delta":
                    delta = ev.get("delta")
                    if isinstance(delta, str) and delta:
                        yield delta
                elif kind == "response.output_item.done":
                    item = ev.get("item")
                    if isinstance(item, dict) and item.get("type") == "function_call":
                        args = item.get("arguments")
                        turn.calls.append(
                            {
                                "call_id": str(item.get("call_id") or item.get("id") or ""),
                                "name": str(item.get("name") or ""),
                                "arguments": args if isinstance(args, str) else json.dumps(args),
                            }
                        )
                elif kind in ("response.completed", "response.incomplete"):
                    response = ev.get("response")
                    rid = response.get("id") if isinstance(response, dict) else None
                    if not isinstance(rid, str) or not rid:
                        raise BackendError(
                            f"LLM {url}: {kind} without a response id",
                            notice=_NOTICE_CUT,
                            backend="llm",
                        )
                    if kind == "response.incomplete":
                        log.warning("LLM %s: response %s incomplete: %s", url, rid, response)
                    turn.id = rid
                elif kind in ("response.failed", "error"):
                    response = ev.get("response")
                    err = response.get("error") if isinstance(response, dict) else None
                    if not isinstance(err, dict):
                        err = ev.get("error") if isinstance(ev.get("error"), dict) else ev
                    what = err.get("message") or err.get("code") or "no details"
                    raise BackendError(
                        f"LLM {url}: {kind}: {what}", notice=_NOTICE_FAILED, backend="llm"
                    )
        if turn.id is None:
            raise BackendError(
                f"LLM {url}: the stream ended without response.completed",
                notice=_NOTICE_CUT,
                backend="llm",
            )

"""``[llm] platform = "openai_chat"`` (alias ``OpenAIChat``): any OpenAI Chat Completions
compatible endpoint, streamed.

:class:`ChatBackend` is created once per process and holds what all devices share (the HTTP
clients, the 60 s include cache, the MCP tools; see :mod:`.client`); ``backend.conversation()``
gives one device's :class:`OpenAIChat` (a :class:`~echokit_fast.backends.base.Conversation`):
prompts, history and tool calls.

Request: the body keys in the reference's order: ``stream``, the ``extra`` keys, ``messages``,
``model`` (omitted when empty); with tools, ``tools`` (the ``extra`` tools plus the MCP tools)
and ``tool_choice: "auto"``. ``extra`` keys named ``stream``, ``messages`` or ``model`` are
ignored (ours win, as with the reference's duplicate JSON keys read last-wins). The body is sent
through the SDK's raw ``post`` so that key order, the endpoint URL and an omitted ``model`` are
exactly as configured; ``chat.completions.create`` would force a ``model`` and a
``/chat/completions`` suffix.

History (with the reference's ``history = 0`` bug fixed):

* the history starts as a copy of ``dynamic_prompts`` (few-shot) and ``sys_prompts`` always
  come first, never trimmed;
* before a new user message, a dangling user message (previous turn failed or was
  interrupted) is removed; after appending it, if the history is longer than ``2 x history``,
  one entry is removed from the front (then any ``tool`` messages left at the front without
  their assistant ``tool_calls`` message, which every OpenAI-compatible server rejects);
* a speculative reply (:meth:`OpenAIChat.speculate`, the device server's answer started
  before the user's turn has ended) is rewound to the history before it when it is dropped;
* the assistant text is appended when the reply completes (only if non-empty, like the
  reference); on any error or cancellation everything the turn added after the user message
  (tool calls, tool results) is removed again, so the next turn drops the dangling user message;
* ``[limits] max_history_bytes``: after the user message is appended and after the answer is,
  the oldest entries are removed (as above) while the text of the history (its ``content``
  strings, UTF-8) is over the cap; the system prompts and the newest message are always kept,
  so one request is at most the prompts, the cap and one message;
* ``history = 0``: nothing is kept between turns: every request is the prompts
  (``sys_prompts`` + ``dynamic_prompts``) plus the current user message (and this turn's tool
  exchange). The reference removed the user message itself, sending only the system prompt.

Prompts (:mod:`.prompts`) are (re)loaded lazily on the first reply after creation or
:meth:`OpenAIChat.reset` (or eagerly with :meth:`OpenAIChat.load_prompts`).

Tool calls (:mod:`.tools`, :mod:`.mcp`; a device's own tools too, :meth:`OpenAIChat.use_tools`):
while a tool with a ``call_mcp_message`` runs, that
message is yielded as :class:`~echokit_fast.backends.base.SpeakNow`. The text before the calls
is kept as the content of the assistant ``tool_calls`` message (the reference stored ``""`` and
lost it).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, Literal, Protocol

from pydantic import Field, field_validator

from echokit_fast.backends import registry
from echokit_fast.backends.base import Conversation, SpeakNow, ToolBox
from echokit_fast.backends.llm.client import MAX_TOOL_ROUNDS, OpenAIBackend, stream
from echokit_fast.backends.llm.errors import tool_loop_error
from echokit_fast.backends.llm.mcp import MCPServer, MCPTools
from echokit_fast.backends.llm.prompts import Msg, as_msg, load_prompts
from echokit_fast.backends.llm.tools import ToolCallAssembler
from echokit_fast.backends.schema import HttpUrl, Message, Section, choices

__all__ = ["ChatBackend", "ChatCompletions", "ChatPrompts", "OpenAIChat", "OpenAIChatLLM"]


class ChatPrompts(Section):
    """What every Chat Completions platform's section has beside its transport: the prompts,
    the MCP servers and ``extra`` (``history`` each declares, with its own default)."""

    sys_prompts: list[Message] = Field(default_factory=list)
    dynamic_prompts: list[Message] = Field(default_factory=list)
    #: None (or written ``""``): no remote prompts
    prompts_url: HttpUrl | None = None
    mcp_server: list[MCPServer] = Field(default_factory=list)
    extra: dict[str, Any] | None = None

    @field_validator("prompts_url", mode="before")
    @classmethod
    def _empty_is_none(cls, url: Any) -> Any:
        return None if url == "" else url


class OpenAIChatLLM(ChatPrompts):
    """``[llm] platform = "openai_chat"``: an OpenAI Chat Completions compatible endpoint."""

    platform: Literal["openai_chat"] = "openai_chat"
    url: HttpUrl = Field(validation_alias=choices("url", "llm_chat_url"))
    api_key: str | None = None
    model: str = ""
    history: int = Field(ge=0)


class ChatCompletions(Protocol):
    """What an :class:`OpenAIChat` asks of its backend: the section (``history``, the
    prompts), the MCP tools, the request body and one streamed completion of it, as
    ``chat.completion.chunk`` objects (HTTP for ``openai_chat``, the in-process model for
    ``local``)."""

    cfg: Any
    tools: MCPTools
    max_history_bytes: int | None

    async def ensure_tools(self) -> None: ...

    async def load_prompts(self) -> tuple[list[Msg], list[Msg]]: ...

    def body(self, messages: list[Msg], device: ToolBox | None = None) -> Msg: ...

    def completion(self, body: Msg) -> AsyncIterator[Msg]: ...


class ChatBackend(OpenAIBackend):
    """What all ``openai_chat`` conversations share; :meth:`conversation` gives an
    :class:`OpenAIChat`."""

    reserved_extra = ("stream", "messages", "model")
    cfg: OpenAIChatLLM

    #: ``[limits] max_history_bytes`` (None: only ``history`` bounds it)
    max_history_bytes: int | None = None

    def conversation(self, device_id: str | None = None) -> OpenAIChat:
        return OpenAIChat(self)

    def body(self, messages: list[Msg], device: ToolBox | None = None) -> Msg:
        """The request body for ``messages`` (the ``device``'s tools offered too), keys in
        the reference's order."""
        extra = self.extra_with_tools(self.tools.openai_tools(device))
        body: Msg = {"stream": True, **extra, "messages": messages}
        if self.cfg.model:
            body["model"] = self.cfg.model
        return body

    async def load_prompts(self) -> tuple[list[Msg], list[Msg]]:
        """``(sys_prompts, dynamic_prompts)``, see :func:`.prompts.load_prompts`."""
        return await load_prompts(self.cfg, self.http, self.include_cache)

    def completion(self, body: Msg) -> AsyncIterator[Msg]:
        """One streamed request of ``body``: its chunks (see :func:`.client.stream`)."""
        return stream(self, body, progress=_has_content, whole=_as_chunks)


class OpenAIChat:
    """One device's conversation (a :class:`~echokit_fast.backends.base.Conversation`) over
    any :class:`ChatCompletions` backend."""

    def __init__(self, backend: ChatCompletions) -> None:
        self.backend = backend
        self.limit = backend.cfg.history
        self._sys: list[Msg] = [as_msg(m) for m in backend.cfg.sys_prompts]
        self._dynamic: list[Msg] = [as_msg(m) for m in backend.cfg.dynamic_prompts]
        self._history: list[Msg] = copy.deepcopy(self._dynamic)
        self._loaded = False
        self._device: ToolBox | None = None
        #: set by :meth:`speculate` for the next reply: its tool calls wait for it
        self._adopted: asyncio.Event | None = None

    def use_tools(self, tools: ToolBox | None) -> None:
        """Offer the device's ``tools`` too (``backends.base.ToolConversation``)."""
        self._device = tools

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

    def speculate(self, adopted: asyncio.Event) -> object:
        """The next reply is speculative (``backends.base.Rewindable``): its tool calls wait
        for ``adopted``; the state returned is the history and prompts as they are now."""
        self._adopted = adopted
        return copy.deepcopy(self._history), self._sys, self._dynamic, self._loaded

    def rewind(self, state: object) -> None:
        """Back to the history and prompts of :meth:`speculate`'s ``state``."""
        self._history, self._sys, self._dynamic, self._loaded = state  # type: ignore[misc]
        self._adopted = None

    def _add_user(self, text: str) -> None:
        hist = self._history
        if self.limit == 0:
            hist[:] = copy.deepcopy(self._dynamic)
        elif hist and hist[-1]["role"] == "user":
            hist.pop()
        hist.append({"role": "user", "content": text})
        if self.limit and len(hist) > 2 * self.limit:
            self._drop_oldest()
        self._trim_bytes()

    def _drop_oldest(self) -> None:
        """Remove the oldest entry, then tool results left without their ``tool_calls``."""
        hist = self._history
        del hist[0]
        while len(hist) > 1 and hist[0]["role"] == "tool":
            del hist[0]

    def _trim_bytes(self) -> None:
        """Oldest entries out while the history's text is over ``max_history_bytes``."""
        cap = self.backend.max_history_bytes
        if cap is None:
            return
        sizes = [_text_bytes(m) for m in self._history]
        total = sum(sizes)
        while total > cap and len(self._history) > 1:
            before = len(self._history)
            self._drop_oldest()
            total -= sum(sizes[: before - len(self._history)])
            del sizes[: before - len(self._history)]

    # -- the reply ---------------------------------------------------------------------------

    async def reply(self, user_text: str) -> AsyncIterator[str | SpeakNow]:
        """Stream the answer to ``user_text`` (text deltas, SpeakNow items). Raises
        BackendError; on error or cancellation only the user message stays in the history
        (nothing at all once a speculative reply is rewound)."""
        adopted, self._adopted = self._adopted, None
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
                if adopted is not None:
                    await adopted.wait()  # a speculative reply: no tool runs before adoption
                self._history.append(
                    {"role": "assistant", "content": "".join(text), "tool_calls": calls}
                )
                for call in calls:
                    name = call["function"]["name"]
                    tool = self.backend.tools.tools.get(name)
                    if tool is not None and tool.call_message:
                        yield SpeakNow(tool.call_message)
                    args = call["function"]["arguments"]
                    contents = await self.backend.tools.call(name, args, device=self._device)
                    for content in contents:
                        self._history.append(
                            {"role": "tool", "content": content, "tool_call_id": call["id"]}
                        )
                text_all.clear()
            else:
                raise tool_loop_error(MAX_TOOL_ROUNDS)
            answer = "".join(text_all)
            if self.limit == 0:
                self._history[:] = copy.deepcopy(self._dynamic)
            elif answer:
                self._history.append({"role": "assistant", "content": answer})
                self._trim_bytes()
            done = True
        finally:
            if not done:
                del self._history[mark:]

    async def _complete(self, tools: ToolCallAssembler) -> AsyncIterator[str]:
        """One streamed completion over the current history: yields content deltas, collects
        tool-call fragments into ``tools``."""
        body = self.backend.body(self._sys + self._history, self._device)
        async with aclosing(self.backend.completion(body)) as chunks:
            async for chunk in chunks:
                delta = _delta(chunk)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    yield content
                fragments = delta.get("tool_calls")
                if isinstance(fragments, list) and fragments:
                    tools.add(fragments)


def _delta(chunk: Msg) -> Msg:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return {}
    delta = choices[0].get("delta")
    return delta if isinstance(delta, dict) else {}


def _has_content(chunk: Msg) -> bool:
    """Whether a chunk carries content: text, reasoning (``reasoning_content`` /
    ``reasoning``, as reasoning models stream it before their answer) or tool-call pieces; an
    empty delta or a keep-alive chunk does not."""
    delta = _delta(chunk)
    texts = (delta.get(k) for k in ("content", "reasoning_content", "reasoning"))
    return any(isinstance(t, str) and t for t in texts) or bool(delta.get("tool_calls"))


def _as_chunks(completion: Msg) -> list[Msg]:
    """A non-streamed ``chat.completion`` (the answer of a server that ignores ``stream``) as
    the chunk a stream would have carried: its first choice's message as the delta."""
    choices = completion.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict):
            return [{"choices": [{"index": 0, "delta": message}]}]
    return [completion]


def _text_bytes(msg: Msg) -> int:
    content = msg.get("content")
    return len(content.encode("utf-8")) if isinstance(content, str) else len(repr(content))


@registry.llm(
    "openai_chat",
    aliases=["OpenAIChat"],
    config=OpenAIChatLLM,
    untagged=["llm_chat_url", "url"],
)
def build(cfg: OpenAIChatLLM, needs: registry.Needs) -> Callable[..., Conversation]:
    backend = ChatBackend(
        cfg,
        first_token_timeout=needs.llm_first_token_s,
        idle_timeout=needs.llm_stall_s,
        max_json_bytes=needs.max_json_bytes,
    )
    backend.max_history_bytes = needs.max_history_bytes
    return backend.conversation

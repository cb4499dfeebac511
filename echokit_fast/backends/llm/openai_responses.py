"""``[llm] platform = "openai_responses"`` (alias ``OpenAIResponses``): the OpenAI Responses
API, where the provider keeps the history.

:class:`ResponsesBackend` shares the clients, timeouts, error notices, includes and MCP tools of
:mod:`.client` with ``openai_chat``; the request, the chaining by ``previous_response_id`` and the
tool rounds are described on :class:`ResponsesBackend` and :class:`OpenAIResponses`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from echokit_fast.backends import registry
from echokit_fast.backends.base import BackendError, Conversation, SpeakNow, ToolBox
from echokit_fast.backends.llm.client import MAX_TOOL_ROUNDS, OpenAIBackend, stream
from echokit_fast.backends.llm.errors import NOTICE_FAILED, NOTICES, tool_loop_error
from echokit_fast.backends.llm.mcp import MCPServer
from echokit_fast.backends.llm.prompts import Msg, load_instructions
from echokit_fast.backends.schema import HttpUrl, Message, Section, choices

__all__ = ["OpenAIResponses", "OpenAIResponsesLLM", "ResponsesBackend"]

log = logging.getLogger(__name__)


class OpenAIResponsesLLM(Section):
    """``[llm] platform = "openai_responses"``: the OpenAI Responses API."""

    platform: Literal["openai_responses"] = "openai_responses"
    url: HttpUrl = Field(
        default="https://api.openai.com/v1/responses",
        validation_alias=choices("url", "llm_responses_url"),
    )
    model: str = "gpt-4.1"
    instructions: str = "You are a helpful assistant."
    api_key: str = ""
    sys_prompts: list[Message] = Field(default_factory=list)
    mcp_server: list[MCPServer] = Field(default_factory=list)
    extra: dict[str, Any] | None = None


class ResponsesBackend(OpenAIBackend):
    """What all ``openai_responses`` conversations share: the same clients, include cache and
    MCP tools as ``openai_chat`` (the reference never loaded the tools for this platform).
    :meth:`conversation` gives an :class:`OpenAIResponses`."""

    reserved_extra = ("model", "previous_response_id", "instructions", "input", "stream")
    cfg: OpenAIResponsesLLM

    def conversation(self, device_id: str | None = None) -> OpenAIResponses:
        return OpenAIResponses(self)

    def responses_body(
        self,
        previous_id: str | None,
        instructions: str,
        input_: Any,
        device: ToolBox | None = None,
    ) -> Msg:
        """``{model, previous_response_id?, instructions?, input, ...extra, stream}`` plus
        ``tools`` (the ``extra`` tools, then the MCP tools) and ``tool_choice: "auto"`` when
        there are tools (merged as for ``openai_chat``, in the Responses function-tool shape)."""
        body: Msg = {}
        if self.cfg.model:
            body["model"] = self.cfg.model
        if previous_id:
            body["previous_response_id"] = previous_id
        if instructions:
            body["instructions"] = instructions
        body["input"] = input_
        body.update(self.extra_with_tools(self.tools.responses_tools(device)))
        body["stream"] = True
        return body

    async def load_instructions(self) -> str:
        """See :func:`.prompts.load_instructions`."""
        return await load_instructions(self.cfg, self.http, self.include_cache)


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
    * Tool calls (the reference chained them wrongly): when a response ends with
      ``function_call`` items, each call's ``call_mcp_message`` is yielded as
      :class:`~echokit_fast.backends.base.SpeakNow`, the tool runs through MCP, and a new
      request chained to *that* response's id posts the ``function_call_output`` items; its
      stream is read on (at most ``MAX_TOOL_ROUNDS``).
    * A failed, cut or cancelled turn leaves :attr:`previous_id` at the last completed turn,
      so the chain stays valid; a dropped speculative reply is rewound to the id before it
      even when it completed (:meth:`speculate`). A stream that ends without
      ``response.completed`` is an error (the answer was cut, and there is no id to chain to).
    """

    def __init__(self, backend: ResponsesBackend) -> None:
        self.backend = backend
        #: the ``response.id`` of the last completed turn (None: the next turn is a first one)
        self.previous_id: str | None = None
        self.instructions = ""
        self._loaded = False
        self._device: ToolBox | None = None
        #: set by :meth:`speculate` for the next reply: its tool calls wait for it
        self._adopted: asyncio.Event | None = None

    def use_tools(self, tools: ToolBox | None) -> None:
        """Offer the device's ``tools`` too (``backends.base.ToolConversation``)."""
        self._device = tools

    def reset(self) -> None:
        """Start a new chain: the next turn sends the instructions (reloaded) again."""
        self.previous_id = None
        self._loaded = False

    async def load_prompts(self) -> None:
        """(Re)load the instructions now (includes expanded) and start a new chain."""
        self.instructions = await self.backend.load_instructions()
        self.previous_id = None
        self._loaded = True

    def speculate(self, adopted: asyncio.Event) -> object:
        """The next reply is speculative (``backends.base.Rewindable``): its tool calls wait
        for ``adopted``; the state returned is the chain (``previous_id``) and instructions."""
        self._adopted = adopted
        return self.previous_id, self.instructions, self._loaded

    def rewind(self, state: object) -> None:
        """Back to the chain of :meth:`speculate`'s ``state``: a dropped reply that completed
        is not chained to."""
        self.previous_id, self.instructions, self._loaded = state  # type: ignore[misc]
        self._adopted = None

    async def reply(self, user_text: str) -> AsyncIterator[str | SpeakNow]:
        """Stream the answer to ``user_text`` (text deltas, SpeakNow items). Raises
        BackendError; :attr:`previous_id` changes only when the whole turn completed."""
        adopted, self._adopted = self._adopted, None
        be = self.backend
        await be.ensure_tools()
        if not self._loaded:
            await self.load_prompts()
        previous = self.previous_id
        instructions = self.instructions  # on every request: they are not carried over
        input_: Any = user_text
        for _round in range(MAX_TOOL_ROUNDS + 1):
            turn = _Turn()
            body = be.responses_body(previous, instructions, input_, self._device)
            async with aclosing(self._respond(body, turn)) as deltas:
                async for delta in deltas:
                    yield delta
            if not turn.calls:
                self.previous_id = turn.id
                return
            if adopted is not None:
                await adopted.wait()  # a speculative reply: no tool runs before adoption
            outputs = []
            for call in turn.calls:
                tool = be.tools.tools.get(call["name"])
                if tool is not None and tool.call_message:
                    yield SpeakNow(tool.call_message)
                contents = await be.tools.call(call["name"], call["arguments"], device=self._device)
                outputs.append(
                    {
                        "type": "function_call_output",
                        "call_id": call["call_id"],
                        "output": "\n".join(contents),
                    }
                )
            # The outputs answer the calls of *this* response (the reference chained them to
            # the previous turn's id and kept reading the old stream).
            previous, input_ = turn.id, outputs
        raise tool_loop_error(MAX_TOOL_ROUNDS)

    async def _respond(self, body: Msg, turn: _Turn) -> AsyncIterator[str]:
        """One streamed response: yields ``response.output_text.delta`` texts, records the
        function calls and the completed response's id in ``turn``."""
        url = self.backend.cfg.url
        async with aclosing(
            stream(self.backend, body, progress=_has_content, whole=_as_events)
        ) as events:
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
                            notice=NOTICES.cut,
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
                        f"LLM {url}: {kind}: {what}", notice=NOTICE_FAILED, backend="llm"
                    )
        if turn.id is None:
            raise BackendError(
                f"LLM {url}: the stream ended without response.completed",
                notice=NOTICES.cut,
                backend="llm",
            )


def _has_content(event: Msg) -> bool:
    """Whether an event carries content: a non-empty ``*.delta`` (text, reasoning, function
    arguments) or a finished output item; ``response.in_progress`` and the like do not."""
    kind = event.get("type")
    if not isinstance(kind, str):
        return False
    delta = event.get("delta")
    return (kind.endswith(".delta") and isinstance(delta, str) and bool(delta)) or (
        kind == "response.output_item.done"
    )


def _as_events(response: Msg) -> list[Msg]:
    """A non-streamed response object (the answer of a server that ignores ``stream``) as the
    events a stream would have carried: its output text, its function calls, then
    ``response.<status>`` (completed, incomplete or failed)."""
    events: list[Msg] = []
    output = response.get("output")
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            events.append({"type": "response.output_item.done", "item": item})
        elif item.get("type") == "message" and isinstance(item.get("content"), list):
            for part in item["content"]:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    events.append({"type": "response.output_text.delta", "delta": part.get("text")})
    status = response.get("status")
    end = status if status in ("incomplete", "failed") else "completed"
    events.append({"type": f"response.{end}", "response": response})
    return events


@registry.llm("openai_responses", aliases=["OpenAIResponses"], config=OpenAIResponsesLLM)
def build(cfg: OpenAIResponsesLLM, needs: registry.Needs) -> Callable[..., Conversation]:
    backend = ResponsesBackend(
        cfg,
        first_token_timeout=needs.llm_first_token_s,
        idle_timeout=needs.llm_stall_s,
        max_json_bytes=needs.max_json_bytes,
    )
    return backend.conversation

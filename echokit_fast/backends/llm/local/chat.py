"""The device conversations of ``[llm] platform = "local"``: the same
:class:`~echokit_fast.backends.llm.openai_chat.OpenAIChat` (history, prompts, tool rounds) as
``openai_chat``, its completions written by the in-process engine instead of an HTTP server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from echokit_fast.backends.base import ToolBox
from echokit_fast.backends.llm.client import LLMBackend
from echokit_fast.backends.llm.local import LocalLLM
from echokit_fast.backends.llm.openai_chat import OpenAIChat
from echokit_fast.backends.llm.prompts import Msg, load_prompts

__all__ = ["LocalChatBackend"]

log = logging.getLogger(__name__)


class LocalChatBackend(LLMBackend):
    """What all ``local`` conversations share: the engine (``engine.stream(request)``, see
    :class:`~echokit_fast.backends.llm.local.engine.LocalLLMEngine`), the MCP tools and the
    prompt includes. A chat format without tool calls offers no tools (the configured ones are
    refused when the config loads; a device's own are left out, logged once)."""

    reserved_extra = ("stream", "messages", "model")
    cfg: LocalLLM

    #: ``[limits] max_history_bytes`` (None: only ``history`` bounds it)
    max_history_bytes: int | None = None

    def __init__(self, cfg: LocalLLM, engine: Any) -> None:
        super().__init__(cfg)
        self.engine = engine
        self._told_no_tools = False

    def conversation(self, device_id: str | None = None) -> OpenAIChat:
        return OpenAIChat(self)

    async def load_prompts(self) -> tuple[list[Msg], list[Msg]]:
        """``(sys_prompts, dynamic_prompts)``, see :func:`.prompts.load_prompts`."""
        return await load_prompts(self.cfg, self.http, self.include_cache)

    def body(self, messages: list[Msg], device: ToolBox | None = None) -> Msg:
        """The engine request: the sampling of ``[llm]``, ``extra``, the tools (when the chat
        format can call them) and ``messages``."""
        if self.cfg.tools_supported:
            extra = self.extra_with_tools(self.tools.openai_tools(device))
        else:
            extra = dict(self.extra)
            if device is not None and device.tools() and not self._told_no_tools:
                self._told_no_tools = True
                log.info(
                    "local LLM: the device's tools are not offered (chat_format %r returns no "
                    "tool calls; chatml-function-calling does)",
                    self.cfg.chat_format,
                )
        return {**extra, "messages": messages}

    def completion(self, body: Msg) -> AsyncIterator[Msg]:
        return self.engine.stream(body)

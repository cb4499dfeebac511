"""The board's own tools: the xiaozhi firmware is an MCP server on its conversation's socket
(docs/xiaozhi.md#device-tools), JSON-RPC 2.0 inside ``{"type":"mcp","payload":...}``.

:class:`DeviceTools` is its client, a :class:`~echokit_fast.backends.base.ToolBox`: after the
hello it sends ``initialize``, then ``tools/list`` (page after page while ``nextCursor`` is
given; the tools meant for the user only are not asked for), and offers what it got to the
LLM under names the LLM APIs accept (every character outside ``[A-Za-z0-9_-]`` made ``_``,
at most 64: ``self.audio_speaker.set_volume`` is ``self_audio_speaker_set_volume``). A call is
``tools/call`` with the tool's own name, answered within ``[xiaozhi] mcp_call_timeout_s``.

The firmware's rules: every request has a numeric ``id`` (it ignores any other, without a
reply), so each request here takes the next number; its errors come without a ``code``. A
tool's failure, an error or a timeout is told to the LLM as the tool's answer ("Tool call X
failed: ..."), never as a failure of the turn.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from echokit_fast import __version__
from echokit_fast.backends.base import Tool

__all__ = ["PROTOCOL_VERSION", "DeviceTools", "MCPFailed"]

log = logging.getLogger("echokit_fast.device")

#: the MCP version the firmware speaks
PROTOCOL_VERSION = "2024-11-05"
#: the longest tool name the LLM APIs take
MAX_NAME = 64
#: pages of tools/list read at most
MAX_PAGES = 32
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class MCPFailed(Exception):
    """A request got an error, or no answer in time."""


class DeviceTools:
    """The board's MCP server, over ``send`` (a JSON-RPC payload to the board)."""

    def __init__(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        timeout: float,
        log_id: str,
    ) -> None:
        self._send = send
        self._timeout = timeout
        self._log_id = log_id
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tools: dict[str, tuple[str, Tool]] = {}  # offered name -> (its own name, tool)

    # -- ToolBox -----------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        return [tool for _, tool in self._tools.values()]

    async def call(self, name: str, arguments: str) -> list[str]:
        entry = self._tools.get(name)
        if entry is None:
            return [f"Tool call {name} failed, tool not found"]
        try:
            args = json.loads(arguments) if arguments else {}
        except ValueError:
            args = {}
        try:
            result = await self.request(
                "tools/call",
                {"name": entry[0], "arguments": args if isinstance(args, dict) else {}},
            )
        except MCPFailed as exc:
            return [f"Tool call {name} failed: {exc}"]
        texts = _texts(result)
        if isinstance(result, dict) and result.get("isError"):
            return [f"Tool call {name} failed: " + " ".join(texts)]
        return texts or [""]

    # -- the session -------------------------------------------------------------------

    async def start(self) -> None:
        """``initialize``, then every page of ``tools/list``; failures are logged (the board
        then offers no tools)."""
        try:
            await self.request(
                "initialize",
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "echokit-fast", "version": __version__},
                },
            )
            cursor = ""
            for _ in range(MAX_PAGES):
                page = await self.request("tools/list", {"cursor": cursor} if cursor else None)
                self._add(page.get("tools") if isinstance(page, dict) else None)
                cursor = page.get("nextCursor") if isinstance(page, dict) else None
                if not isinstance(cursor, str) or not cursor:
                    break
        except MCPFailed as exc:
            log.warning("device %s: its MCP server: %s", self._log_id, exc)
            return
        log.info(
            "device %s: %d tools of its own: %s", self._log_id, len(self._tools), list(self._tools)
        )

    def _add(self, tools: Any) -> None:
        for item in tools if isinstance(tools, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                continue
            own = item["name"]
            name = _UNSAFE.sub("_", own)[:MAX_NAME]
            if not name or name in self._tools:
                log.warning("device %s: tool %.80r skipped (name taken)", self._log_id, own)
                continue
            schema = item.get("inputSchema")
            description = item.get("description")
            self._tools[name] = (
                own,
                Tool(
                    name,
                    description if isinstance(description, str) else "",
                    schema if isinstance(schema, dict) else {"type": "object", "properties": {}},
                ),
            )

    async def request(self, method: str, params: dict[str, Any] | None) -> Any:
        """One JSON-RPC request; its ``result`` (MCPFailed: its error, or no answer in time)."""
        rid = next(self._ids)
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            payload["params"] = params
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self._send(payload)
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            raise MCPFailed(f"{method}: no answer within {self._timeout:g} s") from None
        finally:
            self._pending.pop(rid, None)

    def receive(self, payload: Any) -> None:
        """A JSON-RPC message from the board (answers are matched to their requests; its own
        requests and notifications are not used)."""
        if not isinstance(payload, dict):
            return
        rid = payload.get("id")
        future = self._pending.get(rid) if isinstance(rid, int) else None
        if future is None or future.done():
            return
        error = payload.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            future.set_exception(MCPFailed(str(message)))
        else:
            future.set_result(payload.get("result"))


def _texts(result: Any) -> list[str]:
    content = result.get("content") if isinstance(result, dict) else None
    items = content if isinstance(content, list) else []
    return [
        str(item["text"])
        for item in items
        if isinstance(item, dict) and item.get("type") == "text" and "text" in item
    ]

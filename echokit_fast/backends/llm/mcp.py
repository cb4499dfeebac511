"""MCP tools of ``[[llm.mcp_server]]``: the config table, listing (``tools/list``) and calling
(``tools/call``) through the ``mcp`` package, one short session per request; offered to the LLM
with a device's own tools (a :class:`~echokit_fast.backends.base.ToolBox`), the configured ones
first, and calls of the device's routed to it."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from echokit_fast import __version__
from echokit_fast.backends.base import BackendError, Tool, ToolBox
from echokit_fast.backends.llm.prompts import Msg
from echokit_fast.backends.schema import HttpUrl, Section

__all__ = ["MCPServer", "MCPTool", "MCPTools"]

log = logging.getLogger(__name__)


class MCPServer(Section):
    """One ``[[llm.mcp_server]]``. ``api_key`` is accepted but, as in the reference, unused."""

    server: HttpUrl
    type: Literal["http_streamable", "sse"] = "http_streamable"
    call_mcp_message: str = ""
    api_key: str = ""


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
    """Tools of the configured ``[[llm.mcp_server]]`` entries, loaded by :meth:`load`.

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

    def offered(self, device: ToolBox | None = None) -> list[Tool]:
        """The configured tools, then the ``device``'s whose names are not taken."""
        out = [Tool(t.name, t.description, t.parameters) for t in self.tools.values()]
        if device is not None:
            out += [t for t in device.tools() if t.name not in self.tools]
        return out

    def responses_tools(self, device: ToolBox | None = None) -> list[Msg]:
        """The tools in the Responses API's function-tool shape (flat, no ``function`` key)."""
        return [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
            }
            for t in self.offered(device)
        ]

    def openai_tools(self, device: ToolBox | None = None) -> list[Msg]:
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in self.offered(device)
        ]

    async def call(
        self,
        name: str,
        arguments: str,
        *,
        device: ToolBox | None = None,
        timeout: float | None = 60.0,
    ) -> list[str]:
        """Run tool ``name`` (a configured one, else one of the ``device``'s); the ``tool``
        message contents. A transport failure raises BackendError."""
        tool = self.tools.get(name)
        if tool is None and device is not None and any(t.name == name for t in device.tools()):
            return await device.call(name, arguments)
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
    from mcp import ClientSession
    from mcp.types import Implementation

    @asynccontextmanager
    async def session() -> AsyncIterator[Any]:
        info = Implementation(name=f"echokit-fast {transport} client", version=__version__)
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

"""The board's own tools (its MCP server on the conversation's socket) offered to the LLM
beside the configured ones, and the LLM's calls routed back to the board: a real server and a
stand-in chat server on loopback, the real ``openai_chat`` client, a board that answers MCP as
the firmware does (numeric ids, pages cut with ``nextCursor``, errors without a code)."""

from __future__ import annotations

import asyncio
from typing import Any

from standins import ChatServer, FakeTools, tool_call
from test_device import build, run
from test_xiaozhi import FIXTURE
from xiaozhi_client import Board, messages, silence

from echokit_fast.backends.base import Backends
from echokit_fast.backends.llm.openai_chat import ChatBackend, OpenAIChatLLM
from echokit_fast.config import XiaozhiConfig, default_config

QUESTION = FIXTURE + silence(1.0)
PAGES = [  # the board's tools/list pages, as the firmware cuts them
    [
        {
            "name": "self.get_device_status",
            "description": "The device's status",
            "inputSchema": {"type": "object", "properties": {}},
        }
    ],
    [
        {
            "name": "self.audio_speaker.set_volume",
            "description": "Set the volume",
            "inputSchema": {
                "type": "object",
                "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
                "required": ["volume"],
            },
        }
    ],
]


class FirmwareMcp:
    """The board's MCP server: answers initialize and tools/list; tools/call as scripted
    (``calls``: tool name -> result, an error message, or None for no answer at all)."""

    def __init__(self, calls: dict[str, Any]) -> None:
        self.calls = calls
        self.requests: list[dict[str, Any]] = []

    def answer(self, req: dict[str, Any]) -> dict[str, Any] | None:
        self.requests.append(req)
        rid, method, params = req["id"], req["method"], req.get("params") or {}
        assert isinstance(rid, int) and req["jsonrpc"] == "2.0"
        if method == "initialize":
            info = {"name": "bread-compact-wifi", "version": "2.4.2"}
            result = {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}}
            return {"jsonrpc": "2.0", "id": rid, "result": {**result, "serverInfo": info}}
        if method == "tools/list":
            page = 1 if params.get("cursor") == PAGES[1][0]["name"] else 0
            result: dict[str, Any] = {"tools": PAGES[page]}
            if page == 0:
                result["nextCursor"] = PAGES[1][0]["name"]
            return {"jsonrpc": "2.0", "id": rid, "result": result}
        scripted = self.calls[params["name"]]
        if scripted is None:
            return None
        if isinstance(scripted, str):
            return {"jsonrpc": "2.0", "id": rid, "error": {"message": scripted}}
        return {"jsonrpc": "2.0", "id": rid, "result": scripted}


def test_device_tools_offered_called_and_failures_told(serve, tmp_path):
    chat = ChatServer()
    chat_addr = serve(chat.app)
    chat.reply(tool_call("c1", "self_audio_speaker_set_volume", '{"volume": 30}'))
    chat.reply(["Volume set."])
    chat.reply(
        [
            *tool_call("c2", "self_get_device_status", "{}"),
            *tool_call("c3", "self_audio_speaker_set_volume", '{"volume": 200}', index=1),
        ]
    )
    chat.reply(["Sorry."])
    config = default_config().model_copy(update={"xiaozhi": XiaozhiConfig(mcp_call_timeout_s=0.5)})
    app, f = build(tmp_path, config=config)
    llm = OpenAIChatLLM.model_validate(
        {"url": f"http://{chat_addr}/v1/chat/completions", "history": 5}
    )
    backend = ChatBackend(llm, tools=FakeTools())  # a configured MCP tool: weather
    f.ctx.backends = Backends(f.transcriber, f.speaker, backend.conversation)
    addr = serve(app)
    ok = {"content": [{"type": "text", "text": "true"}], "isError": False}
    mcp = FirmwareMcp({"self.audio_speaker.set_volume": ok})

    async def main():
        board = await Board.open(addr, mcp=mcp.answer)
        await asyncio.wait_for(board.listed.wait(), 20)  # (before the first question)
        turns = []
        for calls in (
            {"self.audio_speaker.set_volume": ok},
            {"self.get_device_status": None, "self.audio_speaker.set_volume": "Bad volume"},
        ):
            mcp.calls = calls
            await board.listen_start("auto")
            await board.speak(QUESTION)
            turns.append(await board.until("stop"))
        await board.close()
        return turns

    first, second = run(main())
    kinds = [r["method"] for r in mcp.requests]
    assert kinds[:3] == ["initialize", "tools/list", "tools/list"]
    assert mcp.requests[0]["params"]["protocolVersion"] == "2024-11-05"
    assert "params" not in mcp.requests[1]  # the first page: no cursor
    assert mcp.requests[2]["params"] == {"cursor": "self.audio_speaker.set_volume"}
    ids = [r["id"] for r in mcp.requests]
    assert len(set(ids)) == len(ids)  # every request its own number
    # the LLM saw the configured tool, then the board's under names it accepts
    offered = [t["function"]["name"] for t in chat.requests[0].json["tools"]]
    assert offered == ["weather", "self_get_device_status", "self_audio_speaker_set_volume"]
    params = chat.requests[0].json["tools"][2]["function"]["parameters"]
    assert params == PAGES[1][0]["inputSchema"]
    # the call went to the board under its own name, and its answer back to the LLM
    call = mcp.requests[3]
    assert call["method"] == "tools/call"
    assert call["params"] == {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 30}}
    assert chat.requests[1].json["messages"][-1] == {
        "role": "tool",
        "content": "true",
        "tool_call_id": "c1",
    }
    assert messages(first)[0]["type"] == "stt"
    subtitles = [m["text"] for m in messages(first) if m.get("state") == "sentence_start"]
    assert subtitles == ["Volume set."]
    # an error (no code) and no answer at all: told to the LLM, the turn goes on
    tool_msgs = [m for m in chat.requests[3].json["messages"] if m["role"] == "tool"][-2:]
    assert tool_msgs[0]["content"].startswith("Tool call self_get_device_status failed: ")
    assert "no answer within 0.5 s" in tool_msgs[0]["content"]
    assert tool_msgs[1]["content"] == "Tool call self_audio_speaker_set_volume failed: Bad volume"
    subtitles = [m["text"] for m in messages(second) if m.get("state") == "sentence_start"]
    assert subtitles == ["Sorry."]

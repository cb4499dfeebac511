"""openai_chat conversations over real loopback HTTP against the stand-in chat server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import free_port
from standins import ChatServer, FakeTools, MCPStandin, tool_call

from echokit_fast.backends.base import BackendError, Conversation, SpeakNow
from echokit_fast.backends.llm.includes import IncludeCache
from echokit_fast.backends.llm.mcp import MCPServer, MCPTool, MCPTools
from echokit_fast.backends.llm.openai_chat import ChatBackend, OpenAIChatLLM
from echokit_fast.backends.llm.tools import ToolCallAssembler


def llm_cfg(addr: str, **kw: Any) -> OpenAIChatLLM:
    data: dict[str, Any] = {"url": f"http://{addr}/v1/chat/completions", "history": 5}
    data.update(kw)
    return OpenAIChatLLM.model_validate(data)


async def collect(conv, text: str) -> list[Any]:
    return [item async for item in conv.reply(text)]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def chat(serve):
    server = ChatServer()
    server.addr = serve(server.app)
    return server


# --- request ----------------------------------------------------------------------------------


def test_request_body_order_headers_and_streamed_deltas(chat):
    cfg = llm_cfg(
        chat.addr,
        api_key="sk-test",
        model="m1",
        extra={"temperature": 0.5, "enable_search": True},
        sys_prompts=[{"role": "system", "content": "Be brief."}],
    )
    chat.reply(["Hel", "lo", " there."])

    async def go():
        be = ChatBackend(cfg)
        conv = be.conversation()
        assert isinstance(conv, Conversation)
        out = await collect(conv, "hi")
        await be.aclose()
        return out

    assert run(go()) == ["Hel", "lo", " there."]
    req = chat.requests[0]
    assert req.path == "/v1/chat/completions"
    assert list(req.json) == ["stream", "temperature", "enable_search", "messages", "model"]
    assert req.json["stream"] is True
    assert req.json["temperature"] == 0.5 and req.json["enable_search"] is True
    assert req.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert req.json["model"] == "m1"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.headers["user-agent"] == "curl/7.81.0"
    assert req.headers["content-type"] == "application/json"
    assert "tools" not in req.json and "tool_choice" not in req.json


def test_no_key_no_authorization_and_empty_model_omitted(chat):
    async def go():
        be = ChatBackend(llm_cfg(chat.addr))
        await collect(be.conversation(), "x")
        await be.aclose()

    run(go())
    req = chat.requests[0]
    assert "authorization" not in req.headers
    assert "model" not in req.json
    assert list(req.json) == ["stream", "messages"]


def test_gaia_bearer_key_is_sent_once(chat):
    from echokit_fast.config import parse_config

    text = f"""
addr = "0.0.0.0:9090"
[tts]
platform = "stream_gsv"
url = "http://localhost:9094/v1/audio/stream_speech"
speaker = "cooper"
[asr]
platform = "openai"
url = "http://localhost:9092/v1/audio/transcriptions"
[llm]
platform = "openai_chat"
url = "http://{chat.addr}/v1/chat/completions"
api_key = "Bearer gaia-1234"
model = "default"
history = 5
"""
    cfg = parse_config(text, log_issues=False).config.llm

    async def go():
        be = ChatBackend(cfg)
        await collect(be.conversation(), "x")
        await be.aclose()

    run(go())
    assert chat.requests[0].headers["authorization"] == "Bearer gaia-1234"


def test_extra_tools_force_tool_choice_and_reserved_keys_ignored(chat):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    cfg = llm_cfg(chat.addr, extra={"tools": tools, "stream": False, "model": "x", "top_p": 1})

    async def go():
        be = ChatBackend(cfg)
        await collect(be.conversation(), "x")
        await be.aclose()

    run(go())
    body = chat.requests[0].json
    assert body["stream"] is True
    assert "model" not in body
    assert body["tools"] == tools
    assert body["tool_choice"] == "auto"
    assert list(body) == ["stream", "tools", "top_p", "tool_choice", "messages"]


# --- history ----------------------------------------------------------------------------------


def _turns(chat, cfg, script: list[Any]) -> list[list[dict[str, Any]]]:
    """Run one reply per script item (a reply list or an int status to fail); return the
    messages each request carried."""

    async def go():
        be = ChatBackend(cfg)
        conv = be.conversation()
        for i, item in enumerate(script):
            if isinstance(item, int):
                chat.fail(item)
                with pytest.raises(BackendError):
                    await collect(conv, f"u{i}")
            else:
                chat.reply(item)
                await collect(conv, f"u{i}")
        await be.aclose()
        return conv.history

    final = run(go())
    return [r.json["messages"] for r in chat.requests], final


def test_history_turn_by_turn_with_trimming(chat):
    cfg = llm_cfg(chat.addr, history=1, sys_prompts=[{"role": "system", "content": "S"}])
    sent, final = _turns(chat, cfg, [["a0."], ["a1."], ["a2."]])
    sys = {"role": "system", "content": "S"}
    assert sent[0] == [sys, {"role": "user", "content": "u0"}]
    # [u0, a0] + u1 = 3 > 2 -> one removed from the front
    assert sent[1] == [
        sys,
        {"role": "assistant", "content": "a0."},
        {"role": "user", "content": "u1"},
    ]
    # [a0, u1, a1] + u2 = 4 > 2 -> again only ONE entry removed per turn (as the reference)
    assert sent[2] == [
        sys,
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1."},
        {"role": "user", "content": "u2"},
    ]
    assert final == [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1."},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2."},
    ]


def test_history_zero_keeps_nothing_but_sends_the_user_message(chat):
    cfg = llm_cfg(
        chat.addr,
        history=0,
        sys_prompts=[{"role": "system", "content": "Translate."}],
        dynamic_prompts=[
            {"role": "user", "content": "bonjour"},
            {"role": "assistant", "content": "hello"},
        ],
    )
    sent, final = _turns(chat, cfg, [["one"], ["two"]])
    few = [
        {"role": "system", "content": "Translate."},
        {"role": "user", "content": "bonjour"},
        {"role": "assistant", "content": "hello"},
    ]
    assert sent[0] == [*few, {"role": "user", "content": "u0"}]
    assert sent[1] == [*few, {"role": "user", "content": "u1"}]
    assert final == few[1:]


def test_failed_turn_leaves_a_dangling_user_message_dropped_next_turn(chat):
    cfg = llm_cfg(chat.addr, history=5)
    sent, final = _turns(chat, cfg, [["a0"], 500, ["a2"]])
    assert sent[1] == [
        {"role": "user", "content": "u0"},
        {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "u1"},
    ]
    # the failed turn stored no assistant message; its user message is replaced by u2
    assert sent[2] == [
        {"role": "user", "content": "u0"},
        {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "u2"},
    ]
    assert final[-1] == {"role": "assistant", "content": "a2"}


def test_dynamic_prompts_start_the_history_and_reset_restores_them(chat):
    dyn = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    cfg = llm_cfg(chat.addr, history=5, dynamic_prompts=dyn)

    async def go():
        be = ChatBackend(cfg)
        conv = be.conversation()
        await collect(conv, "one")
        assert len(conv.history) == 4
        conv.reset()
        assert conv.history == dyn
        await collect(conv, "two")
        await be.aclose()

    run(go())
    assert chat.requests[1].json["messages"] == [*dyn, {"role": "user", "content": "two"}]


# --- prompts_url and includes -----------------------------------------------------------------


def test_prompts_url_replaces_configured_prompts(chat):
    base = f"http://{chat.addr}"
    chat.prompts = {
        "sys_prompts": [{"role": "system", "content": "Remote sys"}],
        "dynamic_prompts": [{"role": "user", "content": "few"}, {"role": "assistant"}],
    }
    cfg = llm_cfg(
        chat.addr,
        prompts_url=f"{base}/prompts",
        sys_prompts=[{"role": "system", "content": "Local"}],
    )

    async def go():
        be = ChatBackend(cfg)
        await collect(be.conversation(), "x")
        chat.prompts = None  # now 404 -> configured prompts
        await collect(be.conversation(), "y")
        await be.aclose()

    run(go())
    assert chat.requests[0].json["messages"] == [
        {"role": "system", "content": "Remote sys"},
        {"role": "user", "content": "few"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "x"},
    ]
    assert chat.requests[1].json["messages"] == [
        {"role": "system", "content": "Local"},
        {"role": "user", "content": "y"},
    ]


def test_url_includes_expanded_cached_and_failed_left_as_url(chat):
    base = f"http://{chat.addr}"
    chat.includes["facts"] = "FACTS"
    now = [0.0]
    cache = IncludeCache(clock=lambda: now[0])
    sys = f"Know: {{{{ {base}/include/facts }}}} and {{{{{base}/include/nope}}}}."
    cfg = llm_cfg(
        chat.addr,
        sys_prompts=[
            {"role": "system", "content": sys},
            {"role": "system", "content": f"{{{{{base}/include/facts}}}}"},
        ],
    )

    async def go():
        be = ChatBackend(cfg, include_cache=cache)
        await collect(be.conversation(), "a")
        now[0] = 59.0
        await collect(be.conversation(), "b")  # cached
        now[0] = 61.0
        await collect(be.conversation(), "c")  # expired: fetched again
        await be.aclose()

    run(go())
    first = chat.requests[0].json["messages"][0]["content"]
    assert first == f"Know: FACTS and {base}/include/nope."
    # only the first system prompt is expanded
    assert chat.requests[0].json["messages"][1]["content"] == f"{{{{{base}/include/facts}}}}"
    assert chat.include_hits["facts"] == 2
    assert chat.include_hits["nope"] == 3  # failures are not cached


def test_include_cache_is_bounded():
    now = [0.0]
    c = IncludeCache(max_entries=3, clock=lambda: now[0])
    for i in range(5):
        c.put(f"u{i}", str(i))
    assert len(c) == 3
    assert c.get("u0") is None and c.get("u4") == "4"


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [(500, "failed (HTTP 500)"), (401, "API key (HTTP 401)"), (400, "rejected the request")],
)
def test_http_status_errors(chat, status, words):
    chat.fail(status)

    async def go():
        be = ChatBackend(llm_cfg(chat.addr))
        try:
            with pytest.raises(BackendError) as ei:
                await collect(be.conversation(), "x")
        finally:
            await be.aclose()
        return ei.value

    err = run(go())
    assert words in err.notice
    assert str(status) in str(err)
    assert err.backend == "llm"


def test_connection_refused():
    cfg = OpenAIChatLLM.model_validate(
        {"url": f"http://127.0.0.1:{free_port()}/v1/chat/completions", "history": 1}
    )

    async def go():
        be = ChatBackend(cfg)
        try:
            with pytest.raises(BackendError) as ei:
                await collect(be.conversation(), "x")
        finally:
            await be.aclose()
        return ei.value

    assert run(go()).notice == "The language model is not reachable."


def test_stream_cut_mid_reply_stores_nothing(chat):
    chat.reply(["Hello", " world", " again."], cut_after=2)

    async def go():
        be = ChatBackend(llm_cfg(chat.addr))
        conv = be.conversation()
        got: list[Any] = []
        with pytest.raises(BackendError) as ei:
            async for d in conv.reply("x"):
                got.append(d)
        await be.aclose()
        return got, ei.value, conv.history

    got, err, hist = run(go())
    assert got == ["Hello", " world"]
    assert err.notice == "The language model's answer was cut off."
    assert hist == [{"role": "user", "content": "x"}]


def test_first_token_timeout_and_the_server_sees_the_disconnect(chat):
    chat.reply(["late"], first_delay=30)

    async def go():
        be = ChatBackend(llm_cfg(chat.addr), first_token_timeout=0.3)
        try:
            with pytest.raises(BackendError) as ei:
                await collect(be.conversation(), "x")
        finally:
            await be.aclose()
        return ei.value

    err = run(go())
    assert err.notice == "The language model did not answer in time."
    assert "first token" in str(err)
    assert chat.disconnected.wait(10)


def test_idle_timeout_between_deltas(chat):
    chat.reply(["a", "b"], delay=30)

    async def go():
        be = ChatBackend(llm_cfg(chat.addr), idle_timeout=0.3)
        got = []
        with pytest.raises(BackendError) as ei:
            async for d in be.conversation().reply("x"):
                got.append(d)
        await be.aclose()
        return got, ei.value

    got, err = run(go())
    assert got == ["a"]
    assert "next token" in str(err)


def test_never_answering_server_times_out(chat):
    chat.fail(hang=True)

    async def go():
        be = ChatBackend(llm_cfg(chat.addr), first_token_timeout=0.3)
        try:
            with pytest.raises(BackendError) as ei:
                await collect(be.conversation(), "x")
        finally:
            await be.aclose()
        return ei.value

    assert run(go()).notice == "The language model did not answer in time."
    assert chat.disconnected.wait(10)


def test_cancellation_mid_stream_closes_the_http_stream(chat):
    chat.reply(["one", "two", "three"], delay=30)

    async def go():
        be = ChatBackend(llm_cfg(chat.addr))
        conv = be.conversation()
        first = asyncio.Event()

        async def consume():
            async for _ in conv.reply("x"):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        saw = await asyncio.to_thread(chat.disconnected.wait, 10)
        await be.aclose()
        return saw, conv.history

    saw, hist = run(go())
    assert saw
    assert chat.completed == 0
    assert hist == [{"role": "user", "content": "x"}]


# --- tool calls -------------------------------------------------------------------------------


def test_tool_call_assembler_incremental_and_whole():
    a = ToolCallAssembler()
    for d in tool_call("c1", "weather", '{"city": "Paris"}', pieces=4):
        a.add(d["tool_calls"])
    for d in tool_call("c2", "time", "{}", index=1, pieces=1):
        a.add(d["tool_calls"])
    assert a.calls() == [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]
    b = ToolCallAssembler()  # llama.cpp style: whole calls, no index
    b.add([{"id": "x", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}])
    b.add([{"id": "y", "type": "function", "function": {"name": "g", "arguments": ""}}])
    assert [c["function"] for c in b.calls()] == [
        {"name": "f", "arguments": '{"a":1}'},
        {"name": "g", "arguments": "{}"},
    ]


def test_tool_call_round_trip_with_speak_now(chat):
    deltas = ["Let me check. ", *tool_call("call_9", "weather", '{"city": "Paris"}')]
    chat.reply(deltas)
    chat.reply(["It is 21 degrees."])
    tools = FakeTools()

    async def go():
        be = ChatBackend(llm_cfg(chat.addr), tools=tools)
        conv = be.conversation()
        out = await collect(conv, "weather?")
        await be.aclose()
        return out, conv.history

    out, hist = run(go())
    assert out == ["Let me check. ", SpeakNow("Checking."), "It is 21 degrees."]
    assert tools.calls == [("weather", '{"city": "Paris"}')]
    first, second = chat.requests[0].json, chat.requests[1].json
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather",
                "parameters": {"type": "object"},
            },
        }
    ]
    assert first["tool_choice"] == "auto"
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
    }
    assert second["messages"] == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me check. ", "tool_calls": [call]},
        {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_9"},
    ]
    assert hist[-1] == {"role": "assistant", "content": "It is 21 degrees."}


def test_unknown_tool_is_answered_with_an_error_message(chat):
    chat.reply(tool_call("c1", "nosuch", "{}"))
    chat.reply(["Sorry."])

    async def go():
        be = ChatBackend(llm_cfg(chat.addr), tools=FakeTools())
        out = await collect(be.conversation(), "x")
        await be.aclose()
        return out

    assert run(go()) == ["Sorry."]
    tool_msg = chat.requests[1].json["messages"][-1]
    assert tool_msg == {
        "role": "tool",
        "content": "Tool call nosuch failed, tool not found",
        "tool_call_id": "c1",
    }


def test_failure_after_a_tool_round_removes_the_tool_messages(chat):
    chat.reply(tool_call("c1", "weather", "{}"))
    chat.fail(503)

    async def go():
        be = ChatBackend(llm_cfg(chat.addr), tools=FakeTools())
        conv = be.conversation()
        with pytest.raises(BackendError):
            await collect(conv, "x")
        await be.aclose()
        return conv.history

    assert run(go()) == [{"role": "user", "content": "x"}]


def test_mcp_servers_that_fail_are_skipped():
    async def go():
        srv = MCPServer.model_validate({"server": f"http://127.0.0.1:{free_port()}/mcp"})
        return await MCPTools.load([srv], timeout=5)

    assert run(go()).tools == {}


@pytest.mark.parametrize("transport", ["http_streamable", "sse"])
def test_real_mcp_server_tools_end_to_end(chat, serve, transport):
    mcp = MCPStandin(transport)
    url = f"http://{serve(mcp.app)}{mcp.path}"
    cfg = llm_cfg(
        chat.addr,
        mcp_server=[{"server": url, "type": transport, "call_mcp_message": "One moment."}],
    )
    chat.reply(
        [
            *tool_call("c1", "weather", '{"city": "Oslo"}'),
            *tool_call("c2", "boom", "", index=1),
        ]
    )
    chat.reply(["Cold."])

    async def go():
        be = ChatBackend(cfg)
        out = await collect(be.conversation(), "weather?")
        await be.aclose()
        return out

    out = run(go())
    assert out == [SpeakNow("One moment."), SpeakNow("One moment."), "Cold."]
    assert mcp.calls == [("weather", {"city": "Oslo"}), ("boom", {})]
    advertised = {t["function"]["name"]: t for t in chat.requests[0].json["tools"]}
    assert advertised["weather"]["function"]["description"] == "The weather in a city"
    assert advertised["weather"]["function"]["parameters"]["required"] == ["city"]
    assert chat.requests[0].json["tool_choice"] == "auto"
    tool_msgs = [m for m in chat.requests[1].json["messages"] if m["role"] == "tool"]
    assert tool_msgs == [
        {"role": "tool", "content": '{\n  "city": "Oslo",\n  "temp": 21\n}', "tool_call_id": "c1"},
        {"role": "tool", "content": "Tool call boom failed, mcp call error", "tool_call_id": "c2"},
    ]


def test_mcp_server_gone_at_call_time_is_a_backend_error(chat):
    tools = MCPTools()
    tools.tools["weather"] = MCPTool(
        "weather", "", {}, f"http://127.0.0.1:{free_port()}/mcp", "http_streamable"
    )
    chat.reply(tool_call("c1", "weather", "{}"))

    async def go():
        be = ChatBackend(llm_cfg(chat.addr), tools=tools)
        conv = be.conversation()
        with pytest.raises(BackendError) as ei:
            await collect(conv, "x")
        await be.aclose()
        return ei.value, conv.history

    err, hist = run(go())
    assert err.notice == "A tool the assistant needed is not available."
    assert hist == [{"role": "user", "content": "x"}]


def test_prompts_and_includes_over_the_size_cap_are_not_used(chat):
    """A prompts_url or {{url}} body over PROMPT_MAX_BYTES is refused while it is read (the
    configured prompt, or the URL itself, is used)."""
    from echokit_fast.backends.http import PROMPT_MAX_BYTES

    base = f"http://{chat.addr}"
    huge = "x" * (PROMPT_MAX_BYTES + 1)
    chat.prompts = {"sys_prompts": [{"role": "system", "content": huge}], "dynamic_prompts": []}
    chat.includes["big"] = huge
    chat.includes["small"] = "SMALL"
    sys = f"{{{{{base}/include/big}}}} {{{{{base}/include/small}}}}"
    cfg = llm_cfg(
        chat.addr, prompts_url=f"{base}/prompts", sys_prompts=[{"role": "system", "content": sys}]
    )

    async def go():
        be = ChatBackend(cfg)
        await collect(be.conversation(), "x")
        await be.aclose()

    run(go())
    assert chat.requests[0].json["messages"][0] == {
        "role": "system",
        "content": f"{base}/include/big SMALL",
    }

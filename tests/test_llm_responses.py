"""openai_responses conversations (docs/protocol.md#the-answer) over real loopback HTTP against the
stand-in Responses server, with the reference's tool-call bugs fixed (docs/compatibility.md#llm)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import free_port
from standins import FakeTools, MCPStandin, ResponsesServer, function_call

from echokit_fast.backends import registry
from echokit_fast.backends.base import BackendError, Conversation, SpeakNow
from echokit_fast.backends.llm.openai_responses import OpenAIResponsesLLM, ResponsesBackend
from echokit_fast.backends.registry import unsupported
from echokit_fast.config import parse_config


def llm_cfg(addr: str, **kw: Any) -> OpenAIResponsesLLM:
    data: dict[str, Any] = {"url": f"http://{addr}/v1/responses"}
    data.update(kw)
    return OpenAIResponsesLLM.model_validate(data)


async def collect(conv, text: str) -> list[Any]:
    return [item async for item in conv.reply(text)]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def srv(serve):
    server = ResponsesServer()
    server.addr = serve(server.app)
    return server


def _turns(srv, cfg, texts: list[str], *, reset_before: int | None = None, **kw: Any):
    """Run one conversation over ``texts``; the outputs and the conversation's ids."""

    async def go():
        be = ResponsesBackend(cfg, **kw)
        conv = be.conversation("dev1")
        assert isinstance(conv, Conversation)
        outs, ids = [], []
        for i, text in enumerate(texts):
            if i == reset_before:
                conv.reset()
            outs.append(await collect(conv, text))
            ids.append(conv.previous_id)
        await be.aclose()
        return outs, ids

    return run(go())


# --- requests and chaining ------------------------------------------------------------------


def test_first_turn_body_headers_and_streamed_deltas(srv):
    cfg = llm_cfg(
        srv.addr,
        api_key="sk-test",
        model="m1",
        instructions="Be brief.",
        extra={"temperature": 0.5, "store": True},
    )
    # Deltas holding the literal SSE field names must come through unchanged
    # (docs/compatibility.md#llm).
    srv.reply(["Hel", "lo", " data: x", "\nevent: y"])
    outs, ids = _turns(srv, cfg, ["hi"])
    assert outs == [["Hel", "lo", " data: x", "\nevent: y"]]
    assert ids == ["resp_1"]
    req = srv.requests[0]
    assert req.path == "/v1/responses"
    assert list(req.json) == ["model", "instructions", "input", "temperature", "store", "stream"]
    assert req.json == {
        "model": "m1",
        "instructions": "Be brief.",
        "input": "hi",
        "temperature": 0.5,
        "store": True,
        "stream": True,
    }
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.headers["user-agent"] == "curl/7.81.0"
    assert req.headers["content-type"] == "application/json"


def test_later_turns_chain_by_previous_response_id_and_reset_starts_over(srv):
    srv.reply("One.", id="resp_a")
    srv.reply("Two.", id="resp_b")
    srv.reply("Three.", id="resp_c")
    srv.reply("Four.", id="resp_d")
    cfg = llm_cfg(srv.addr, instructions="Be kind.")
    outs, ids = _turns(srv, cfg, ["1", "2", "3", "4"], reset_before=3)
    assert outs == [["One."], ["Two."], ["Three."], ["Four."]]
    assert ids == ["resp_a", "resp_b", "resp_c", "resp_d"]
    bodies = [r.json for r in srv.requests]
    assert bodies[0]["instructions"] == "Be kind." and "previous_response_id" not in bodies[0]
    assert list(bodies[1]) == ["model", "previous_response_id", "instructions", "input", "stream"]
    assert bodies[1]["previous_response_id"] == "resp_a" and bodies[1]["input"] == "2"
    # the instructions on every turn: the API does not carry them over previous_response_id
    assert bodies[2]["previous_response_id"] == "resp_b" and bodies[2]["instructions"] == "Be kind."
    # after reset(): a new chain
    assert bodies[3]["instructions"] == "Be kind." and "previous_response_id" not in bodies[3]


def test_gaia_style_key_and_no_key(srv):
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
platform = "openai_responses"
url = "http://{srv.addr}/v1/responses"
api_key = "Bearer gaia-1234"
"""
    cfg = parse_config(text, log_issues=False).config.llm
    _turns(srv, cfg, ["x"])
    _turns(srv, llm_cfg(srv.addr, model=""), ["y"])
    assert srv.requests[0].headers["authorization"] == "Bearer gaia-1234"
    assert srv.requests[0].json["model"] == "gpt-4.1"
    assert srv.requests[0].json["instructions"] == "You are a helpful assistant."
    assert "authorization" not in srv.requests[1].headers
    assert "model" not in srv.requests[1].json


def test_instructions_from_the_first_system_prompt_with_includes(srv, serve):
    from standins import ChatServer

    inc = ChatServer()
    inc.includes["facts"] = "The sky is green."
    base = f"http://{serve(inc.app)}"
    sys_prompt = f"Facts: {{{{ {base}/include/facts }}}} Missing: {{{{{base}/include/nope}}}}"
    cfg = llm_cfg(
        srv.addr,
        instructions="unused",
        sys_prompts=[{"role": "system", "content": sys_prompt}],
    )
    _turns(srv, cfg, ["a"])
    want = f"Facts: The sky is green. Missing: {base}/include/nope"
    assert srv.requests[0].json["instructions"] == want
    # A first prompt that is not a system prompt: llm.instructions is used.
    other = llm_cfg(
        srv.addr, instructions="Plain.", sys_prompts=[{"role": "user", "content": "no"}]
    )
    _turns(srv, other, ["b"])
    assert srv.requests[1].json["instructions"] == "Plain."
    # Empty instructions are omitted.
    _turns(srv, llm_cfg(srv.addr, instructions=""), ["c"])
    assert "instructions" not in srv.requests[2].json


def test_extra_reserved_keys_ignored_and_extra_tools_force_tool_choice(srv):
    extra = {"stream": False, "input": "x", "model": "y", "tools": [{"type": "web_search"}]}
    _turns(srv, llm_cfg(srv.addr, model="m", extra=extra), ["q"])
    body = srv.requests[0].json
    assert body["stream"] is True and body["input"] == "q" and body["model"] == "m"
    assert body["tools"] == [{"type": "web_search"}]
    assert body["tool_choice"] == "auto"


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [(500, "failed (HTTP 500)"), (401, "API key (HTTP 401)"), (400, "rejected the request")],
)
def test_http_status_errors_keep_the_chain(srv, status, words):
    srv.reply("First.", id="resp_ok")
    srv.fail(status)
    srv.reply("Third.", id="resp_3")

    async def go():
        be = ResponsesBackend(llm_cfg(srv.addr))
        conv = be.conversation()
        await collect(conv, "1")
        with pytest.raises(BackendError) as ei:
            await collect(conv, "2")
        after_error = conv.previous_id
        await collect(conv, "3")
        await be.aclose()
        return ei.value, after_error

    err, after_error = run(go())
    assert words in err.notice and str(status) in str(err) and err.backend == "llm"
    assert after_error == "resp_ok"
    assert srv.requests[2].json["previous_response_id"] == "resp_ok"


@pytest.mark.parametrize(
    ("kw", "notice", "detail"),
    [
        ({"end": "failed", "error_message": "model exploded"}, "could not answer", "exploded"),
        ({"end": "error", "error_message": "rate limited"}, "could not answer", "rate limited"),
        ({"end": "none"}, "cut off", "without response.completed"),
        ({"cut_after": 1}, "cut off", "stream broken"),
    ],
)
def test_failed_cut_or_unfinished_streams(srv, kw, notice, detail):
    srv.reply("First.", id="resp_ok")
    srv.reply(["Half", " of it"], **kw)

    async def go():
        be = ResponsesBackend(llm_cfg(srv.addr))
        conv = be.conversation()
        await collect(conv, "1")
        got: list[Any] = []
        with pytest.raises(BackendError) as ei:
            async for d in conv.reply("2"):
                got.append(d)
        await be.aclose()
        return got, ei.value, conv.previous_id

    got, err, previous = run(go())
    assert got == (["Half"] if kw.get("cut_after") else ["Half", " of it"])
    assert notice in err.notice and detail in str(err)
    assert previous == "resp_ok"


def test_connection_refused():
    cfg = OpenAIResponsesLLM.model_validate({"url": f"http://127.0.0.1:{free_port()}/v1/responses"})

    async def go():
        be = ResponsesBackend(cfg)
        try:
            with pytest.raises(BackendError) as ei:
                await collect(be.conversation(), "x")
        finally:
            await be.aclose()
        return ei.value

    assert run(go()).notice == "The language model is not reachable."


def test_never_answering_server_times_out(srv):
    srv.fail(hang=True)

    async def go():
        be = ResponsesBackend(llm_cfg(srv.addr), first_token_timeout=0.3)
        conv = be.conversation()
        try:
            with pytest.raises(BackendError) as ei:
                await collect(conv, "x")
        finally:
            await be.aclose()
        return ei.value, conv.previous_id

    err, previous = run(go())
    assert err.notice == "The language model did not answer in time."
    assert previous is None
    assert srv.disconnected.wait(10)


def test_cancellation_mid_stream_closes_the_stream_and_keeps_the_chain(srv):
    srv.reply("First.", id="resp_ok")
    srv.reply(["one", "two", "three"], delay=30)

    async def go():
        be = ResponsesBackend(llm_cfg(srv.addr))
        conv = be.conversation()
        await collect(conv, "1")
        first = asyncio.Event()

        async def consume():
            async for _ in conv.reply("2"):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        saw = await asyncio.to_thread(srv.disconnected.wait, 10)
        await be.aclose()
        return saw, conv.previous_id

    saw, previous = run(go())
    assert saw and previous == "resp_ok"
    assert srv.completed == 1


# --- tool calls -------------------------------------------------------------------------------


def test_tool_call_round_trip_chains_to_the_tool_call_response(srv):
    srv.reply("Hello.", id="resp_1")
    srv.reply(["Let me check. ", function_call("call_9", "weather", '{"city": "Paris"}')])
    srv.reply(["It is 21 degrees."], id="resp_final")
    tools = FakeTools()

    outs, ids = _turns(srv, llm_cfg(srv.addr), ["hi", "weather?"], tools=tools)
    assert outs[1] == ["Let me check. ", SpeakNow("Checking."), "It is 21 degrees."]
    assert tools.calls == [("weather", '{"city": "Paris"}')]
    assert ids == ["resp_1", "resp_final"]
    ask, answer = srv.requests[1].json, srv.requests[2].json
    assert ask["previous_response_id"] == "resp_1" and ask["input"] == "weather?"
    assert ask["tools"] == [
        {
            "type": "function",
            "name": "weather",
            "description": "Weather",
            "parameters": {"type": "object"},
        }
    ]
    assert ask["tool_choice"] == "auto"
    # The outputs go to the response that made the call (resp_2), not the previous turn's.
    assert answer["previous_response_id"] == "resp_2"
    assert answer["input"] == [
        {"type": "function_call_output", "call_id": "call_9", "output": '{"temp": 21}'}
    ]
    assert answer["instructions"] == ask["instructions"]
    assert answer["tools"] == ask["tools"]


def test_failure_after_a_tool_round_keeps_the_last_completed_turn(srv):
    srv.reply("Hello.", id="resp_1")
    srv.reply([function_call("c1", "weather", "{}")], id="resp_calls")
    srv.fail(503)

    async def go():
        be = ResponsesBackend(llm_cfg(srv.addr), tools=FakeTools())
        conv = be.conversation()
        await collect(conv, "hi")
        with pytest.raises(BackendError):
            await collect(conv, "x")
        await be.aclose()
        return conv.previous_id

    assert run(go()) == "resp_1"
    assert srv.requests[2].json["previous_response_id"] == "resp_calls"


def test_endless_tool_calls_stop_after_the_round_limit(srv):
    from echokit_fast.backends.llm.client import MAX_TOOL_ROUNDS

    for i in range(MAX_TOOL_ROUNDS + 1):
        srv.reply([function_call(f"c{i}", "nosuch", "{}")])

    async def go():
        be = ResponsesBackend(llm_cfg(srv.addr), tools=FakeTools())
        conv = be.conversation()
        with pytest.raises(BackendError) as ei:
            await collect(conv, "x")
        await be.aclose()
        return ei.value, conv.previous_id

    err, previous = run(go())
    assert err.notice == "The assistant got stuck calling tools."
    assert previous is None
    assert len(srv.requests) == MAX_TOOL_ROUNDS + 1
    assert srv.requests[1].json["input"] == [
        {
            "type": "function_call_output",
            "call_id": "c0",
            "output": "Tool call nosuch failed, tool not found",
        }
    ]


def test_real_mcp_server_tools_end_to_end(srv, serve):
    mcp = MCPStandin()
    url = f"http://{serve(mcp.app)}{mcp.path}"
    cfg = llm_cfg(srv.addr, mcp_server=[{"server": url, "call_mcp_message": "One moment."}])
    srv.reply(
        [
            function_call("c1", "weather", '{"city": "Oslo"}'),
            function_call("c2", "boom", ""),
        ]
    )
    srv.reply(["Cold."])

    outs, ids = _turns(srv, cfg, ["weather?"])
    assert outs == [[SpeakNow("One moment."), SpeakNow("One moment."), "Cold."]]
    assert ids == ["resp_2"]
    assert mcp.calls == [("weather", {"city": "Oslo"}), ("boom", {})]
    advertised = {t["name"]: t for t in srv.requests[0].json["tools"]}
    assert advertised["weather"]["description"] == "The weather in a city"
    assert advertised["weather"]["parameters"]["required"] == ["city"]
    second = srv.requests[1].json
    assert second["previous_response_id"] == "resp_1"
    assert second["input"] == [
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": '{\n  "city": "Oslo",\n  "temp": 21\n}',
        },
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": "Tool call boom failed, mcp call error",
        },
    ]


# --- wiring -----------------------------------------------------------------------------------


def test_serve_accepts_openai_responses(srv):
    assert registry.get("llm", "openai_responses").runnable
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
platform = "openai_responses"
url = "http://{srv.addr}/v1/responses"
"""
    config = parse_config(text, log_issues=False).config
    assert unsupported(config) == []

    async def go():
        factory = registry.get("llm", "openai_responses").build(config.llm, registry.Needs())
        conv = factory("dev")
        out = await collect(conv, "hi")
        await factory.__self__.aclose()
        return type(factory.__self__), out

    kind, out = run(go())
    assert kind is ResponsesBackend and out == ["OK."]


def test_device_text_turns_through_the_real_server(serve, srv, tmp_path):
    from device_fakes import Device, name
    from standins import ASRServer, TTSServer

    from echokit_fast.server.app import create_app
    from echokit_fast.server.state import AppState

    asr, tts = ASRServer(), TTSServer()
    asr_addr, tts_addr = serve(asr.app), serve(tts.app)
    text = f"""
addr = "0.0.0.0:9090"
[tts]
platform = "stream_gsv"
url = "http://{tts_addr}/v1/audio/stream_speech"
speaker = "cooper"
[asr]
platform = "openai"
url = "http://{asr_addr}/v1/audio/transcriptions"
[llm]
platform = "openai_responses"
url = "http://{srv.addr}/v1/responses"
model = "gpt-test"
[[llm.sys_prompts]]
role = "system"
content = "You are a tour guide."
"""
    config = parse_config(text, log_issues=False, base_dir=tmp_path).config
    srv.reply(["It is sunny in Paris. ", "Enjoy the walk!"], id="resp_a")
    srv.reply(["Bring a hat."], id="resp_b")
    srv.reply(["Hello again."], id="resp_c")
    ctx = AppState(config)
    ctx.record_dir = tmp_path / "record"
    addr = serve(create_app(state=ctx))

    async def turns() -> list[list[Any]]:
        out = []
        dev = await Device.open(addr, "a0b1c2d3e4f5")
        await dev.command("Text", input="Weather in Paris?")
        out.append(await dev.until("EndResponse", timeout=60))
        await dev.command("Text", input="And tomorrow?")
        out.append(await dev.until("EndResponse", timeout=60))
        await dev.close()
        # a new (non-reconnect) connection starts a new chain
        dev = await Device.open(addr, "a0b1c2d3e4f5")
        await dev.command("Text", input="Hi")
        out.append(await dev.until("EndResponse", timeout=60))
        await dev.close()
        return out

    results = asyncio.run(asyncio.wait_for(turns(), 120))
    spoken = [[e["StartAudio"]["text"] for e in evs if name(e) == "StartAudio"] for evs in results]
    assert spoken == [
        ["It is sunny in Paris.", "Enjoy the walk!"],
        ["Bring a hat."],
        ["Hello again."],
    ]
    assert all(name(evs[-1]) == "EndResponse" for evs in results)
    bodies = [r.json for r in srv.requests]
    assert bodies[0]["instructions"] == "You are a tour guide."
    assert bodies[0]["input"] == "Weather in Paris?" and bodies[0]["model"] == "gpt-test"
    assert "previous_response_id" not in bodies[0]
    assert bodies[1]["previous_response_id"] == "resp_a"
    assert bodies[1]["instructions"] == "You are a tour guide."
    assert bodies[2]["instructions"] == "You are a tour guide."
    assert "previous_response_id" not in bodies[2]

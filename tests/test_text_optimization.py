"""``[tts.text_optimization]``: a device turn whose segments are rewritten for speech by an LLM
(a second chat-completions stand-in) before stream_gsv speaks them; the request carries the
built-in prompts (English, or Chinese with TTS_OPTIMIZATION_PROMPT_LANG=zh) or the configured
ones; a failing rewrite speaks the original text."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from device_fakes import Device, name
from standins import ChatServer, TTSServer

from echokit_fast.backends.tts.text_optimization import default_prompts
from echokit_fast.config import parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

ANSWER = "It costs $5 on 12/25/2024."
REWRITTEN = "It costs five dollars on December twenty-fifth, twenty twenty-four."


def _config(chat: str, tts: str, opt: str, extra: str = "") -> str:
    return f"""
addr = "127.0.0.1:0"
[asr]
platform = "openai"
url = "http://127.0.0.1:9/v1/audio/transcriptions"
[llm]
platform = "openai_chat"
llm_chat_url = "http://{chat}/v1/chat/completions"
history = 1
[tts]
platform = "stream_gsv"
url = "http://{tts}/v1/audio/stream_speech"
speaker = "cooper"
[tts.text_optimization]
url = "http://{opt}/v1/chat/completions"
api_key = "opt-key"
model = "rewriter"
{extra}
"""


def _turn(serve, config: str) -> list[Any]:
    state = AppState(parse_config(config).config)
    addr = serve(create_app(state=state))

    async def run() -> list[Any]:
        dev = await Device.open(addr, "0a1b2c3d4e5f")
        await dev.command("Text", input="How much is it?")
        events = await dev.until("EndResponse", timeout=30)
        await dev.close()
        return events

    return asyncio.run(asyncio.wait_for(run(), 60))


@pytest.fixture
def stack(serve):
    chat, tts, opt = ChatServer(), TTSServer(), ChatServer()
    chat.reply([ANSWER])
    ports = {k: serve(s.app) for k, s in (("chat", chat), ("tts", tts), ("opt", opt))}
    return tts, opt, ports


def test_segments_are_rewritten_before_they_are_spoken(serve, stack, monkeypatch) -> None:
    monkeypatch.delenv("TTS_OPTIMIZATION_PROMPT_LANG", raising=False)
    tts, opt, ports = stack
    opt.reply(["It costs five dollars ", "on December twenty-fifth, twenty twenty-four."])
    events = _turn(serve, _config(ports["chat"], ports["tts"], ports["opt"]))

    # the device is shown the answer as written, and hears the rewrite
    starts = [e["StartAudio"]["text"] for e in events if name(e) == "StartAudio"]
    assert starts == [ANSWER]
    assert [r.json["input"] for r in tts.requests] == [REWRITTEN]
    assert any(name(e) in ("AudioChunk", "AudioChunkWithVowel") for e in events)

    # the rewrite request: the built-in English prompt and example, then the segment
    (req,) = opt.requests
    assert req.headers["authorization"] == "Bearer opt-key"
    body = req.json
    assert body["stream"] is True and body["model"] == "rewriter"
    expected = [m.model_dump() for m in default_prompts("en")]
    assert body["messages"][:-1] == [{"role": m["role"], "content": m["content"]} for m in expected]
    assert body["messages"][0]["content"].startswith("Role\nYou are a professional TTS")
    assert body["messages"][-1] == {"role": "user", "content": ANSWER}


def test_chinese_prompt_is_chosen_by_the_environment(serve, stack, monkeypatch) -> None:
    monkeypatch.setenv("TTS_OPTIMIZATION_PROMPT_LANG", "ZH")
    _tts, opt, ports = stack
    opt.reply(["rewritten"])
    _turn(serve, _config(ports["chat"], ports["tts"], ports["opt"]))
    messages = opt.requests[0].json["messages"]
    assert "文本预处理专家" in messages[0]["content"]
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[1]["content"] == "2026年是一个充满希望的年份。"


def test_configured_prompts_replace_the_built_in_ones(serve, stack) -> None:
    tts, opt, ports = stack
    opt.reply(["rewritten"])
    extra = """
[[tts.text_optimization.prompts]]
role = "system"
content = "Spell out numbers."
[[tts.text_optimization.prompts]]
role = "user"
content = "1"
[[tts.text_optimization.prompts]]
role = "assistant"
content = "one"
"""
    _turn(serve, _config(ports["chat"], ports["tts"], ports["opt"], extra))
    assert opt.requests[0].json["messages"] == [
        {"role": "system", "content": "Spell out numbers."},
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": ANSWER},
    ]
    assert [r.json["input"] for r in tts.requests] == ["rewritten"]


@pytest.mark.parametrize("fault", ["status", "empty"])
def test_a_failed_rewrite_speaks_the_original_text(serve, stack, fault: str) -> None:
    tts, opt, ports = stack
    if fault == "status":
        opt.fail(500)
    else:
        opt.reply([""])
    events = _turn(serve, _config(ports["chat"], ports["tts"], ports["opt"]))
    assert len(opt.requests) == 1
    assert [r.json["input"] for r in tts.requests] == [ANSWER]
    names = [name(e) for e in events]
    assert "DisplayText" not in names  # no failure notice: the segment was spoken
    assert names[-2:] == ["EndAudio", "EndResponse"]

"""``[llm] platform = "local"``: the in-process llama.cpp model, on a tiny random GGUF written
by the test (tests/tiny_llm.py): loading and its failures, the chat template, device turns
(streamed, barged in, queued), and ``/v1/chat/completions`` through the ``openai`` client.

The model answers at temperature 0, so an answer is a function of its prompt: what a device
hears is checked against what the engine writes for the same messages.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from device_fakes import Device, FakeSpeaker, FakeTranscriber, name
from harness import api_state, free_port, serve_process
from standins import MCPStandin
from tiny_llm import CHAT_TEMPLATE, WORDS, write_tiny_llama
from vdev import vdev

from echokit_fast.backends.base import BackendBusy, BackendError, Backends, SpeakNow
from echokit_fast.backends.llm.client import MAX_TOOL_ROUNDS
from echokit_fast.backends.llm.errors import NOTICE_TOOL_LOOP
from echokit_fast.backends.llm.local import LocalLLM
from echokit_fast.backends.llm.local.chat import LocalChatBackend
from echokit_fast.backends.llm.local.engine import (
    NOTICE_BUSY,
    LocalLLMEngine,
    default_threads,
    from_config,
)
from echokit_fast.backends.llm.local.model import ModelFileError, hub_name, model_id
from echokit_fast.config import ConfigError, default_config, parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("llm") / "tiny.gguf")


def cfg(model: Path | str, **kw: Any) -> LocalLLM:
    settings = {"context": 1024, "max_tokens": 12, "temperature": 0.0, "seed": 7, **kw}
    return LocalLLM(model=str(model), **settings)


@pytest.fixture
def engine(tiny: Path) -> Iterator[LocalLLMEngine]:
    e = from_config(cfg(tiny))
    yield e
    e.close()


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z']+", text)


def content(answer: dict[str, Any]) -> str:
    return answer["choices"][0]["message"]["content"]


def ask(engine: LocalLLMEngine, text: str, **kw: Any) -> dict[str, Any]:
    """The engine's whole answer to one user message (on a loop of its own)."""
    messages = [{"role": "user", "content": text}]
    return asyncio.run(engine.complete({"messages": messages, **kw}))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_the_chat_template_comes_from_the_gguf_metadata(tmp_path: Path) -> None:
    # Two models that differ only in their template: the prompt each model is given is its own
    # template rendered (its token count), so the template in the metadata is what is used.
    terse = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    messages = [{"role": "user", "content": "hello world"}]
    for template in (CHAT_TEMPLATE, terse):
        path = write_tiny_llama(tmp_path / f"{len(template)}.gguf", chat_template=template)
        e = from_config(cfg(path))
        try:
            from jinja2 import Template

            rendered = Template(template).render(messages=messages, add_generation_prompt=True)
            expected = len(e.llama.tokenize(rendered.encode(), add_bos=False, special=True))
            usage = ask(e, "hello world", max_tokens=1)["usage"]
            assert usage["prompt_tokens"] == expected, template
        finally:
            e.close()


def test_a_model_without_a_chat_template_needs_chat_format(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "bare.gguf", chat_template=None)
    with pytest.raises(ModelFileError, match=r"no chat template .*chat_format"):
        from_config(cfg(path))
    e = from_config(cfg(path, chat_format="chatml"))  # an explicit format loads it
    try:
        assert ask(e, "hello")["choices"][0]["finish_reason"] == "length"
    finally:
        e.close()


def test_missing_not_gguf_and_corrupt_files_are_one_clear_error(tmp_path: Path, tiny) -> None:
    with pytest.raises(ModelFileError, match=r"no such file"):
        from_config(cfg(tmp_path / "missing.gguf"))
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelFileError, match=r"is not a GGUF file \(it starts with b'not '"):
        from_config(cfg(text))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=r"llama.cpp cannot load .*cut.gguf.*memory"):
        from_config(cfg(cut))


def test_an_offline_hub_name_says_which_file_and_how_to_get_it() -> None:
    name_ = "second-state/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q5_K_M.gguf"
    assert hub_name(name_) == (
        "second-state/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q5_K_M.gguf",
    )
    assert model_id(name_) == "Llama-3.2-1B-Instruct-Q5_K_M"
    # HF_HUB_OFFLINE=1 in every test (conftest): the cache is all there is
    with pytest.raises(ModelFileError) as err:
        from_config(cfg(name_))
    message = str(err.value)
    assert "Llama-3.2-1B-Instruct-Q5_K_M.gguf" in message and "HF_HUB_OFFLINE" in message
    assert "hf download second-state/Llama-3.2-1B-Instruct-GGUF" in message


def test_bad_options_are_refused_at_start_up(tiny: Path) -> None:
    with pytest.raises(RuntimeError, match=r"extra: llama.cpp's chat completion takes no bogus"):
        from_config(cfg(tiny, extra={"bogus": 1}))
    with pytest.raises(RuntimeError, match=r"chat_format: unknown format: nope"):
        from_config(cfg(tiny, chat_format="nope"))
    toml = f'addr = "127.0.0.1:0"\n[llm]\nplatform = "local"\nmodel = "{tiny}"\n'
    toml += '[[llm.mcp_server]]\nserver = "http://127.0.0.1:9/mcp"\ntype = "http_streamable"\n'
    toml += '[asr]\nplatform = "local"\n[tts]\nplatform = "local"\n'
    with pytest.raises(
        ConfigError, match=r"mcp_server needs a chat format .*chatml-function-calling"
    ):
        parse_config(toml, log_issues=False)


def test_default_threads_leave_a_core_for_speech() -> None:
    assert [default_threads(n) for n in (1, 2, 4, 8, 32)] == [1, 1, 3, 7, 8]


# --------------------------------------------------------------------------------------------
# Device turns
# --------------------------------------------------------------------------------------------


def device_app(engine: LocalLLMEngine, **limits: Any) -> tuple[Any, dict[str, Any]]:
    """An app whose devices talk to the local LLM (ASR and TTS faked); the conversations it
    made, by device id."""
    config = default_config()
    if limits:
        config = config.model_copy(update={"limits": config.limits.model_copy(update=limits)})
    state = AppState(config)
    backend = LocalChatBackend(engine.cfg, engine)
    convs: dict[str, Any] = {}

    def conversation(device_id: str) -> Any:
        convs[device_id] = backend.conversation(device_id)
        return convs[device_id]

    state.backends = Backends(FakeTranscriber(), FakeSpeaker(), conversation)
    state.record_dir = Path("/nonexistent")
    return create_app(state=state), convs


def spoken_text(events: list[Any]) -> str:
    return " ".join(e["StartAudio"]["text"] for e in events if name(e) == "StartAudio")


def test_a_device_turn_is_answered_by_the_local_model(serve, engine) -> None:
    app, convs = device_app(engine)
    addr = serve(app)
    expected = content(ask(engine, "hello there"))
    assert words(expected) and set(words(expected)) <= set(WORDS)

    async def turn() -> list[Any]:
        d = await Device.open(addr, "llm0001", opus=True, vowel=True)
        await d.command("Text", input="hello there")
        events = await d.until()
        await d.close()
        return events

    events = asyncio.run(turn())
    names = [name(e) for e in events]
    assert names[0] == "ASR" and names[-1] == "EndResponse"
    assert "AudioChunkWithVowel" in names  # the answer was spoken
    assert spoken_text(events).split() == expected.split()
    assert convs["llm0001"].history[-2:] == [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": expected},
    ]
    last = engine.records[-1]
    assert last.outcome == "length" and last.tokens == engine.cfg.max_tokens


def test_the_answer_streams_token_by_token(engine) -> None:
    async def main() -> list[str]:
        answer = engine.stream({"messages": [{"role": "user", "content": "hi"}]})
        return [c["choices"][0]["delta"].get("content") async for c in answer]

    deltas = [d for d in asyncio.run(main()) if d]
    assert len(deltas) == engine.cfg.max_tokens  # one delta per token, not one whole answer


def test_barge_in_stops_the_generation(serve, tiny) -> None:
    # an answer that would run for a long time (no end token, a big budget)
    e = from_config(cfg(tiny, context=32768, max_tokens=30000))
    try:
        app, _ = device_app(e, max_answer_chars=10**6)
        addr = serve(app)

        async def main() -> list[Any]:
            d = await Device.open(addr, "barge01", opus=True)
            await d.command("Text", input="tell me a long story")
            while name(await d.recv()) != "StartAudio":
                pass
            assert e.pending == 1  # still writing
            # the firmware's barge-in: reconnect with the same id and start a new turn
            again = await Device.open(addr, "barge01", opus=True, reconnect=True)
            rest = await d.until(timeout=30)
            await again.close()
            await d.close()
            return rest

        rest = asyncio.run(main())
        assert name(rest[-1]) == "EndResponse"
        assert e.wait_idle(30)
        last = e.records[-1]
        assert last.outcome == "cancelled" and last.tokens < 30000
    finally:
        e.close()


def test_two_devices_are_answered_one_after_the_other(serve, engine) -> None:
    app, _ = device_app(engine)
    addr = serve(app)
    expected = {q: content(ask(engine, q)) for q in ("first question", "second question")}
    before = len(engine.records)

    async def turn(device: str, question: str) -> list[Any]:
        d = await Device.open(addr, device, opus=True)
        await d.command("Text", input=question)
        events = await d.until()
        await d.close()
        return events

    async def main() -> list[list[Any]]:
        return await asyncio.gather(
            turn("dev0001", "first question"), turn("dev0002", "second question")
        )

    one, two = asyncio.run(main())
    assert spoken_text(one).split() == expected["first question"].split()
    assert spoken_text(two).split() == expected["second question"].split()
    a, b = list(engine.records)[before:]
    assert a.ended <= b.started  # never two answers in the model at once


def test_a_full_queue_is_a_spoken_busy_notice(serve, tiny) -> None:
    e = from_config(cfg(tiny, context=32768, max_tokens=30000, max_queue=0))
    try:
        app, _ = device_app(e)
        addr = serve(app)

        async def main() -> list[Any]:
            hog = e.stream({"messages": [{"role": "user", "content": "long"}]})
            await hog.__anext__()  # the model is writing this one
            with pytest.raises(BackendBusy):
                e.stream({"messages": [{"role": "user", "content": "no room"}]})
            d = await Device.open(addr, "busy001", opus=True)
            await d.command("Text", input="hello")
            events = await d.until()
            await d.close()
            await hog.aclose()
            return events

        events = asyncio.run(main())
        assert spoken_text(events) == NOTICE_BUSY
    finally:
        e.close()


# --------------------------------------------------------------------------------------------
# /v1/chat/completions and /v1/models
# --------------------------------------------------------------------------------------------


def api(serve, engine: LocalLLMEngine) -> openai.OpenAI:
    config = parse_config(
        f'addr = "127.0.0.1:0"\n[llm]\nplatform = "local"\nmodel = "{engine.cfg.model}"\n'
        '[asr]\nplatform = "local"\n[tts]\nplatform = "local"\n',
        log_issues=False,
    ).config
    state = AppState(config)
    state.llm = engine  # installed: loaded already
    state.ready = True
    state.backends = Backends(FakeTranscriber(), FakeSpeaker(), lambda _id: None)
    addr = serve(create_app(state=state))
    return openai.OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0)


def test_chat_completions_through_the_openai_client(serve, engine) -> None:
    client = api(serve, engine)
    messages = [{"role": "user", "content": "what is the weather"}]
    whole = client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=9)
    assert whole.object == "chat.completion" and whole.model == "tiny"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 9 and whole.usage.prompt_tokens > 0
    text = whole.choices[0].message.content
    assert text.split()

    stream = client.chat.completions.create(
        model="gpt-4o", messages=messages, max_tokens=9, stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "tiny" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "length"

    # stop: the answer ends before the stop word
    word = text.split()[3]
    stopped = client.chat.completions.create(
        model="x", messages=messages, max_tokens=9, stop=[f" {word}"]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(f" {word}")]

    models = [m.id for m in client.models.list()]
    assert "tiny" in models and client.models.retrieve("tiny").owned_by == "echokit-fast"


def test_the_stream_ends_with_done_and_a_disconnect_stops_the_model(serve, tiny) -> None:
    e = from_config(cfg(tiny, context=32768, max_tokens=30000))
    try:
        client = api(serve, e)
        url = f"{client.base_url}chat/completions"
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        raw = httpx.post(url, json={**body, "max_tokens": 3}).text
        events = [line for line in raw.split("\n\n") if line]
        assert events[-1] == "data: [DONE]" and len(events) >= 4
        assert json.loads(events[0].removeprefix("data: "))["object"] == "chat.completion.chunk"

        with httpx.stream("POST", url, json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines).startswith("data: {")
        # the client left mid-answer: the model stops
        assert e.wait_idle(30)
        assert e.records[-1].outcome == "cancelled" and e.records[-1].tokens < 30000
    finally:
        e.close()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"messages": []}, 400, "messages must be a non-empty array"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n must be 1"),
        ({"messages": [{"role": "user", "content": "hi"}], "bogus": 1}, 400, "bogus"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role must be one of"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, 400, "0 to 2"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
            400,
            "chatml-function-calling",
        ),
        (
            {"messages": [{"role": "user", "content": "hello " * 2000}]},
            400,
            "context window",
        ),
    ],
)
def test_bad_requests_are_openai_errors(serve, engine, body, status, words) -> None:
    client = api(serve, engine)
    response = httpx.post(f"{client.base_url}chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error"


def test_a_full_queue_is_a_429_and_no_model_a_404(serve, tiny) -> None:
    e = from_config(cfg(tiny, context=32768, max_tokens=30000, max_queue=0))
    try:
        client = api(serve, e)

        async def main() -> httpx.Response:
            hog = e.stream({"messages": [{"role": "user", "content": "long"}]})
            await hog.__anext__()
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{client.base_url}chat/completions",
                    json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
                )
            await hog.aclose()
            return response

        busy = asyncio.run(main())
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"
    finally:
        e.close()

    plain = serve(create_app(state=api_state()))
    response = httpx.post(
        f"http://{plain}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404
    assert "--llm-model" in response.json()["error"]["message"]


def test_ready_and_chat_wait_for_the_model(serve, tiny) -> None:
    gate, loaded = threading.Event(), threading.Event()

    class SlowLoad(AppState):
        def llm_engine(self) -> LocalLLMEngine:
            assert gate.wait(60)
            return super().llm_engine()

        def mark_ready(self) -> None:
            super().mark_ready()
            loaded.set()

    config = default_config(llm_model=str(tiny))
    state = SlowLoad(config)
    state.asr = FakeTranscriber()  # type: ignore[assignment]  # the other engines: installed
    state.tts = FakeSpeaker()  # type: ignore[assignment]
    state.probe_llm = False
    addr = serve(create_app(state=state))
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.get(f"http://{addr}/ready").status_code == 503
    loading = httpx.post(f"http://{addr}/v1/chat/completions", json=body)
    assert loading.status_code == 503 and "loading" in loading.json()["error"]["message"]
    gate.set()
    assert loaded.wait(60)
    assert httpx.get(f"http://{addr}/ready").status_code == 200
    answer = httpx.post(f"http://{addr}/v1/chat/completions", json=body).json()
    assert answer["usage"]["completion_tokens"] == 2


# --------------------------------------------------------------------------------------------
# `echokit-fast serve --llm-model`: a whole voice turn with no other server
# --------------------------------------------------------------------------------------------


def test_serve_llm_model_holds_a_voice_turn_alone(tiny, tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    with serve_process("--llm-model", str(tiny), "--listen", addr) as server:
        assert b"LLM " in server.output and b"ready in" in server.output
        run = vdev(addr, DATA / "vad_fixture_hello16k.wav", out=tmp_path, args=("--speed", "10"))
    assert run.returncode == 0, run.describe()
    (turn,) = run.turns()
    assert turn["end_vad"] and turn["reply_samples"] > 0
    said = words(" ".join(e["text"] for e in run.of("start_audio")))
    assert said and set(said) <= set(WORDS)  # the tiny model's words were spoken


def test_serve_refuses_a_missing_model_in_one_sentence(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "nothing.gguf"
    serve = [sys.executable, "-m", "echokit_fast", "serve"]
    listen = ("--listen", f"127.0.0.1:{free_port()}")
    done = subprocess.run(
        [*serve, "--llm-model", str(missing), *listen], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert f"model '{missing}': no such file" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    both = subprocess.run(
        [*serve, "--llm-model", "a.gguf", "--llm-url", "http://127.0.0.1:9/v1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 2 and "not both" in both.stderr


def test_mcp_tools_are_called_with_the_function_calling_chat_format(serve, tiny) -> None:
    # The random model, offered the stand-in's tools, calls one ("boom", whose arguments are
    # an empty object) every round: the call goes to the real MCP server, its result back to
    # the model, which calls again, until the tool-round limit ends the reply.
    mcp = MCPStandin("http_streamable")
    url = f"http://{serve(mcp.app)}{mcp.path}"
    server = {"server": url, "type": "http_streamable", "call_mcp_message": "One moment."}
    section = cfg(tiny, context=4096, chat_format="chatml-function-calling", mcp_server=[server])
    e = from_config(section)

    async def main() -> tuple[list[Any], BackendError]:
        backend = LocalChatBackend(section, e)
        got: list[Any] = []
        try:
            with pytest.raises(BackendError) as err:
                async for item in backend.conversation().reply("what is the weather in oslo"):
                    got.append(item)
        finally:
            await backend.aclose()
        return got, err.value

    try:
        got, error = asyncio.run(main())
    finally:
        e.close()
    assert error.notice == NOTICE_TOOL_LOOP
    assert mcp.calls == [("boom", {})] * (MAX_TOOL_ROUNDS + 1)
    assert got == [SpeakNow("One moment.")] * (MAX_TOOL_ROUNDS + 1)

"""The claude layout (``[claude] url`` with ``[asr]`` and ``[tts]``): a device talks to Claude
Code through a stand-in EchoKit-CC (``tests/cc_standin.py``) over real sockets, with the
OpenAI-compatible ASR and the stream_gsv TTS stand-ins (``tests/standins.py``)."""

from __future__ import annotations

import asyncio
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cc_standin import (
    CLOSE,
    HANG,
    IDLE_MSG,
    ClaudeCC,
    Expect,
    error,
    output,
    pre_use_tool,
    stop_use_tool,
    tool,
)
from device_fakes import Conversations, Device, FakeSpeaker, FakeTranscriber, name
from harness import api_state, free_port
from standins import ASRServer, TTSServer
from ws_standins import running_ws_server

from echokit_fast.backends.base import Backends
from echokit_fast.backends.claude.bridge import BUSY, INPUT_CANCELLED, SLOW
from echokit_fast.config import parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"
SR = 16000
CONFIRM = ["Confirm", "Cancel"]


def session_id(device_id: str) -> str:
    return str(uuid.uuid5(uuid.UUID("8e1f6eb8-d389-4e62-9cfd-f1964e499c25"), device_id))


@pytest.fixture
def cc() -> Iterator[tuple[ClaudeCC, str]]:
    standin = ClaudeCC()
    with running_ws_server(standin) as addr:
        yield standin, addr


class Stack:
    """The server on the claude layout, with its stand-ins."""

    def __init__(
        self, serve: Any, tmp_path: Path, cc_url: str, *, timeout: float = 60, limits: str = ""
    ) -> None:
        self.asr, self.tts = ASRServer(), TTSServer()
        asr, tts = serve(self.asr.app), serve(self.tts.app)
        text = (
            'addr = "127.0.0.1:0"\n'
            f'[claude]\nurl = "{cc_url}"\n'
            f'[asr]\nplatform = "openai"\nurl = "http://{asr}/v1/audio/transcriptions"\n'
            f'[tts]\nplatform = "stream_gsv"\nurl = "http://{tts}/v1/audio/stream_speech"\n'
            'speaker = "cooper"\n'
            f"[limits]\nclaude_timeout_s = {timeout}\n{limits}"
        )
        self.state = AppState(parse_config(text, log_issues=False).config)
        self.state.record_dir = tmp_path / "record"
        self.addr = serve(create_app(state=self.state))

    async def device(self, device_id: str, **flags: bool) -> Device:
        return await Device.open(self.addr, device_id, stream_asr=True, **flags)

    async def has_notification(self, device_id: str) -> bool:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://{self.addr}/proxy/state/{device_id}")
        assert r.status_code == 200
        assert list(r.json()) == ["has_notification"]
        return r.json()["has_notification"]

    async def until_notification(self, device_id: str) -> None:
        """Wait (on the server's loop) until the device's bridge has something for it."""
        sessions = self.state.sessions
        assert sessions is not None and sessions.loop is not None
        assert self.state.backends is not None
        bridge = self.state.backends.conversation_factory.bridges[device_id]
        done = asyncio.run_coroutine_threadsafe(bridge.wait_unprompted(), sessions.loop)
        await asyncio.wait_for(asyncio.wrap_future(done), 20)


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def names(events: list[Any]) -> list[str]:
    return [name(e) for e in events]


def texts(events: list[Any], kind: str) -> list[Any]:
    return [next(iter(e[kind].values())) for e in events if name(e) == kind]


def notice_turn(events: list[Any], notice: str) -> None:
    """The failure's end of a turn: the notice shown, spoken as a segment, EndResponse."""
    tail = events[events.index({"DisplayText": {"text": notice}}) :]
    assert tail[1] == {"StartAudio": {"text": notice}}
    assert "StartAudio" not in names(tail[2:])
    assert names(tail)[-2:] == ["EndAudio", "EndResponse"]


def _speech_frames() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return pcm[2 * 4096 :] + bytes(2 * SR * 2)  # from 256 ms before the speech, then 2 s silence


def test_a_voice_turn_confirmed_sent_to_claude_code_and_spoken(serve, tmp_path, cc) -> None:
    standin, cc_addr = cc
    stack = Stack(serve, tmp_path, f"ws://{cc_addr}/ws/")
    stack.asr.answer("List the files.")
    standin.answer(
        output("Let me look.", thinking=True),
        output("There are two files. They are main.py and test.py, both small."),
        IDLE_MSG,
    )

    async def go() -> tuple[list, list]:
        dev = await stack.device("dev-voice")
        await dev.command("StartChat")
        await dev.audio(_speech_frames())
        asked = await dev.until("Choices")
        assert standin.messages() == ["CreateSession"]  # nothing is sent before the Select
        await dev.command("Select", index=0)
        answer = await dev.until("EndResponse")
        await dev.close()
        return asked, answer

    asked, answer = run(go())
    assert names(asked)[:1] == ["EndVad"]
    assert asked[-2:] == [
        {"ASR": {"text": "List the files."}},
        {"Choices": {"message": "List the files.", "items": CONFIRM}},
    ]
    # the bridge: one socket at {url}/{UUIDv5(device id)}, the reference's JSON, 300 ms apart
    (conn,) = standin.connections
    assert conn.path == f"/ws/{session_id('dev-voice')}"
    assert conn.texts == [
        '{"type":"CreateSession"}',
        '{"type":"Input","input":"List the files."}',
        '{"type":"Confirm"}',
    ]
    assert conn.times[2] - conn.times[1] >= 0.29
    # thinking is shown, the output spoken in segments, the last output shown at the end
    spoken = ["There are two files.", "They are main.py and test.py, both small."]
    assert names(answer)[0] == "DisplayText" and answer[0]["DisplayText"]["text"] == "Let me look."
    assert texts(answer, "StartAudio") == spoken
    assert sorted(r.json["input"] for r in stack.tts.requests) == sorted(spoken)
    assert any(name(e) == "AudioChunk" for e in answer)
    assert answer[-2:] == [
        {"DisplayText": {"text": " ".join(spoken)}},
        "EndResponse",
    ]


def test_input_cancelled_tool_confirmations_and_questions(serve, tmp_path, cc) -> None:
    standin, cc_addr = cc
    stack = Stack(serve, tmp_path, f"ws://{cc_addr}")
    bash = tool("t1", "Bash", {"description": "Remove the logs", "command": "rm *.log"})
    write = tool("t2", "Write", "notes.txt")
    question = {
        "questions": [
            {
                "header": "Logs",
                "question": "Keep a backup?",
                "options": [
                    {"label": "Yes", "description": "copy first"},
                    {"label": "No", "description": "just delete"},
                ],
            }
        ]
    }
    done = {**bash, "done": True}
    standin.answer(
        pre_use_tool(bash),
        Expect("Select"),
        pre_use_tool(done, write),
        Expect("Cancel"),
        pre_use_tool(done, {**write, "done": True}, tool("t3", "AskUserQuestion", question)),
        Expect("Select"),
        pre_use_tool(done, tool("t4", "AskUserQuestion", {"questions": "none"})),
        Expect("Cancel"),
        stop_use_tool(),
        output("Done."),
        IDLE_MSG,
    )

    async def go() -> list[list]:
        dev = await stack.device("dev-tools")
        seen = []
        await dev.command("Text", input="Delete the logs.")
        seen.append(await dev.until("Choices"))
        await dev.command("Select", index=1)  # the words are not confirmed
        seen.append(await dev.until("EndResponse"))
        await dev.command("Text", input="Clean up the logs.")
        seen.append(await dev.until("Choices"))
        await dev.command("Select", index=0)
        for index in (0, 1, 1):
            seen.append(await dev.until("Choices"))
            await dev.command("Select", index=index)
        seen.append(await dev.until("EndResponse"))
        await dev.close()
        return seen

    cancelled, cancel_end, confirm, ask_bash, ask_write, ask_question, rest = run(go())
    assert cancelled[-1] == {"Choices": {"message": "Delete the logs.", "items": CONFIRM}}
    assert cancel_end == [{"Action": {"action": INPUT_CANCELLED}}, "EndResponse"]
    assert confirm[-1]["Choices"]["message"] == "Clean up the logs."
    assert ask_bash == [
        {
            "Choices": {
                "message": "Claude is requesting to use tool `Bash` \n with args:\n"
                'command: "rm *.log"\ndescription: "Remove the logs"',
                "items": CONFIRM,
            }
        }
    ]
    assert ask_write[-1]["Choices"]["message"].endswith("tool `Write` \n with args:\nnotes.txt")
    assert ask_question[-1] == {
        "Choices": {
            "message": "Logs\nKeep a backup?\nPlease select one of the following options:",
            "items": ["Yes: copy first", "No: just delete"],
        }
    }
    (conn,) = standin.connections
    assert conn.texts == [
        '{"type":"CreateSession"}',
        '{"type":"Input","input":"Clean up the logs."}',
        '{"type":"Confirm"}',
        '{"type":"Select","index":0}',  # Bash confirmed
        '{"type":"Cancel"}',  # Write refused
        '{"type":"Select","index":1}',  # the question's second option
        '{"type":"Cancel"}',  # a question without valid args
    ]
    action = rest[0]["Action"]["action"]
    assert action.startswith("Claude requested to use tool `AskUserQuestion` with invalid args:")
    assert rest[1] == {"DisplayText": {"text": "Tool use completed successfully."}}
    assert texts(rest, "StartAudio") == ["Done."]
    assert rest[-2:] == [{"DisplayText": {"text": "Done."}}, "EndResponse"]


def test_a_notification_while_the_device_is_away_is_presented_when_it_comes_back(
    serve, tmp_path, cc
) -> None:
    standin, cc_addr = cc
    stack = Stack(serve, tmp_path, f"ws://{cc_addr}/")
    standin.answer(output("Building now."), HANG)
    build = tool("b1", "Bash", {"command": "make"})

    async def go() -> tuple[list, list, list]:
        dev = await stack.device("dev-away")
        await dev.command("Text", input="Build it.")
        await dev.until("Choices")
        await dev.command("Select", index=0)
        spoken = await dev.until("EndAudio")
        await dev.close()
        again = await stack.device("dev-away", reconnect=True)  # the state is sent again
        assert await again.until("EndAudio") == spoken
        await again.close()
        assert not await stack.has_notification("dev-away")  # everything reached the device
        await asyncio.to_thread(standin.push, pre_use_tool(build))  # asked while away
        await stack.until_notification("dev-away")
        assert await stack.has_notification("dev-away")
        assert not await stack.has_notification("another-device")
        back = await stack.device("dev-away", reconnect=True)
        asked = await back.until("Choices")
        assert await stack.has_notification("dev-away")  # not answered yet
        await back.command("Select", index=0)
        await asyncio.to_thread(standin.wait_messages, "Select")
        await asyncio.to_thread(standin.push, IDLE_MSG)
        rest = await back.until("EndResponse")
        cleared = await stack.has_notification("dev-away")
        await back.close()
        return spoken, asked, [rest, cleared]

    spoken, asked, (rest, cleared) = run(go())
    assert texts(spoken, "StartAudio") == ["Building now."]
    assert asked == [
        {
            "Choices": {
                "message": 'Claude is requesting to use tool `Bash` \n with args:\ncommand: "make"',
                "items": CONFIRM,
            }
        }
    ]
    assert rest == [{"DisplayText": {"text": "Building now."}}, "EndResponse"]
    assert not cleared
    # one socket all along, kept across the device's connections
    (conn,) = standin.connections
    assert conn.types() == ["CreateSession", "Input", "Confirm", "Select"]


def test_the_bridge_reconnects_once_after_its_socket_closes(serve, tmp_path, cc) -> None:
    standin, cc_addr = cc
    stack = Stack(serve, tmp_path, f"ws://{cc_addr}/ws")
    standin.answer(output("One."), IDLE_MSG)
    standin.answer(output("Two."), IDLE_MSG)

    async def turn(dev: Device, text: str) -> list:
        await dev.command("Text", input=text)
        await dev.until("Choices")
        await dev.command("Select", index=0)
        return await dev.until("EndResponse")

    async def go() -> tuple[list, list]:
        dev = await stack.device("dev-reconnect")
        first = await turn(dev, "First.")
        await asyncio.to_thread(standin.close_newest)  # EchoKit-CC restarts, the network cuts
        assert len(standin.connections) == 1  # no reconnection loop
        second = await turn(dev, "Second.")
        await dev.close()
        return first, second

    first, second = run(go())
    assert texts(first, "StartAudio") == ["One."] and texts(second, "StartAudio") == ["Two."]
    old, new = standin.connections
    assert old.path == new.path == f"/ws/{session_id('dev-reconnect')}"
    assert new.texts[:2] == ['{"type":"CreateSession"}', '{"type":"Input","input":"Second."}']


def test_failures_end_the_turn_with_a_notice_and_other_devices_go_on(serve, tmp_path, cc) -> None:
    standin, cc_addr = cc
    stack = Stack(serve, tmp_path, f"ws://{cc_addr}", timeout=1.0)
    standin.answer(output("Looking.", thinking=True), CLOSE, session=session_id("dev-cut"))
    standin.answer(output("Looking.", thinking=True), HANG, session=session_id("dev-slow"))
    standin.answer(error(), session=session_id("dev-refused"))
    standin.answer(output("Fine."), IDLE_MSG, session=session_id("dev-ok"))

    async def turn(device_id: str, text: str = "Do it.") -> list:
        dev = await stack.device(device_id)
        await dev.command("Text", input=text)
        await dev.until("Choices")
        await dev.command("Select", index=0)
        events = await dev.until("EndResponse")
        await dev.close()
        return events

    async def go() -> dict[str, list]:
        results = await asyncio.gather(
            turn("dev-cut"), turn("dev-slow"), turn("dev-refused"), turn("dev-ok")
        )
        return dict(zip(["cut", "slow", "refused", "ok"], results, strict=True))

    got = run(go())
    assert got["cut"][0] == {"DisplayText": {"text": "Looking."}}
    notice_turn(got["cut"], "The connection to Claude Code was lost.")
    assert got["slow"][0] == {"DisplayText": {"text": "Looking."}}
    notice_turn(got["slow"], SLOW)
    notice_turn(got["refused"], "Claude Code could not take that. Please try again.")
    assert texts(got["ok"], "StartAudio") == ["Fine."]
    assert got["ok"][-2:] == [{"DisplayText": {"text": "Fine."}}, "EndResponse"]


def test_an_unreachable_bridge_is_a_notice(serve, tmp_path) -> None:
    stack = Stack(serve, tmp_path, f"ws://127.0.0.1:{free_port()}/ws/")

    async def go() -> list:
        dev = await stack.device("dev-unreachable")
        await dev.command("Text", input="Hello.")
        events = await dev.until("EndResponse")
        await dev.close()
        return events

    events = run(go())
    assert events[0] == {"ASR": {"text": "Hello."}}
    notice_turn(events, "Claude Code is not reachable.")


def test_words_while_claude_code_works_are_not_sent(serve, tmp_path, cc) -> None:
    standin, cc_addr = cc
    stack = Stack(serve, tmp_path, f"ws://{cc_addr}")
    standin.answer(output("Working on it."), HANG)

    async def go() -> list:
        dev = await stack.device("dev-busy")
        await dev.command("Text", input="Start.")
        await dev.until("Choices")
        await dev.command("Select", index=0)
        await dev.until("EndAudio")
        await dev.command("Text", input="Are you done?")  # the answer is cancelled: new input
        events = await dev.until("EndResponse")
        await dev.close()
        return events

    events = run(go())
    assert events == [
        {"ASR": {"text": "Are you done?"}},
        {"Action": {"action": BUSY}},
        "EndResponse",
    ]
    assert standin.messages() == ["CreateSession", "Input", "Confirm"]


def test_a_dropped_session_closes_its_bridge(serve, tmp_path, cc) -> None:
    """The bridges are bounded by the sessions: when a device's session is dropped (here
    evicted by max_sessions), its EchoKit-CC socket is closed and the bridge forgotten."""
    standin, addr = cc
    stack = Stack(serve, tmp_path, f"ws://{addr}", limits="max_sessions = 1\n")

    async def main() -> None:
        first = await stack.device("aa0000000001")
        await asyncio.to_thread(standin.wait_messages, "CreateSession", 1)
        await first.close()
        second = await stack.device("bb0000000002")  # the first's session is evicted
        await asyncio.to_thread(standin.wait_ended, session_id("aa0000000001"))
        await asyncio.to_thread(standin.wait_messages, "CreateSession", 2)
        await second.close()

    run(main())
    assert stack.state.backends is not None
    bridges = stack.state.backends.conversation_factory.bridges
    assert "aa0000000001" not in bridges and "bb0000000002" in bridges


def test_proxy_state_is_only_served_by_the_claude_layout(serve) -> None:
    state = api_state()
    state.backends = Backends(FakeTranscriber(), FakeSpeaker(), Conversations())
    addr = serve(create_app(state=state))
    r = httpx.get(f"http://{addr}/proxy/state/dev", timeout=20)
    assert r.status_code == 404
    assert r.text == "Not found"


def test_check_config_accepts_the_claude_layout(tmp_path, capsys) -> None:
    from echokit_fast.cli import main

    config = tmp_path / "config.toml"
    config.write_text(
        'addr = "0.0.0.0:8080"\n[claude]\nurl = "http://cc.local:3000/ws/"\n'
        '[asr]\nplatform = "openai"\nurl = "http://asr/v1/audio/transcriptions"\n'
        '[tts]\nplatform = "stream_gsv"\nurl = "http://tts/v1/audio/stream_speech"\n'
        'speaker = "cooper"\n'
    )
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "layout: claude" in out and "claude: ws://cc.local:3000/ws/" in out

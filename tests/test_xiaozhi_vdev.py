"""The xiaozhi front end against ``xiaozhi-vdev`` (firmware/), a virtual xiaozhi-esp32 board
written from the firmware's source on its own: the OTA call, the headers and hello, 60 ms Opus
up, a loudspeaker model that drops what a real board drops (audio outside ``tts start`` ..
``tts stop``, packets past its 40-packet queue), its MCP server. It fails on any protocol
violation the firmware would stumble on; the backends are the in-test fakes (and a stand-in
LLM for the tool call)."""

from __future__ import annotations

from pathlib import Path

import pytest
from device_fakes import SR, FakeSpeaker
from standins import ChatServer, tool_call
from test_device import build
from vdev import xiaozhi_vdev

from echokit_fast.backends.base import Backends
from echokit_fast.backends.llm.openai_chat import ChatBackend, OpenAIChatLLM

WAV = Path(__file__).resolve().parent / "data" / "vad_fixture_hello16k.wav"
FAST = ("--speed", "4", "--gap", "1.5", "--timeout", "60")


@pytest.mark.parametrize(
    "args",
    [
        ("--mode", "auto"),
        ("--mode", "manual"),
        ("--mode", "realtime"),
        ("--abort-after", "100"),
    ],
    ids=["auto", "manual", "realtime", "abort"],
)
def test_a_virtual_board_holds_two_turns(serve, tmp_path, args):
    aborting = "--abort-after" in args
    # (an answer to abort: 3 s of speech, the board aborts 100 ms into it)
    app, f = build(tmp_path, speaker=FakeSpeaker(length=lambda text: SR) if aborting else None)
    addr = serve(app)
    run = xiaozhi_vdev(addr, WAV, WAV, out=tmp_path / "vdev", args=(*FAST, *args))
    assert run.returncode == 0, run.describe()
    board = run.device()
    assert board["ota"]["websocket"] == {
        "url": f"ws://{addr}/xiaozhi/v1/",
        "token": "",
        "version": 1,
    }
    assert board["downlink"] == {"sample_rate": 24000, "frame_duration": 60}
    assert [m["method"] for m in board["mcp"]] == ["initialize", "tools/list"]
    for turn in run.turns():
        assert len(turn["stt"]) == 1 and turn["stt"][0].startswith("heard ")
        assert turn["repeated_tts_start"] == turn["audio_not_speaking"] == 0
        pacing = turn["pacing"]
        assert pacing["dropped_full"] == 0 and pacing["max_lead_s"] < 0.5
        if aborting:
            assert turn["abort"]["tts_stop_after"] < 0.5 and turn["abort"]["packets_after"] == 0
        else:
            assert turn["sentences"] == ["Hello there.", "How are you?", "Fine."]
            assert pacing["packets"] > 0 and pacing["underruns"] == 0
    assert f.manager.sessions[board["id"]].turns == 2


def test_binary_protocol_3_and_a_tool_call_on_the_board(serve, tmp_path):
    chat = ChatServer()
    chat_addr = serve(chat.app)
    chat.reply(tool_call("c1", "self_audio_speaker_set_volume", '{"volume": 30}'))
    chat.reply(["Volume set."])
    app, f = build(tmp_path)
    llm = OpenAIChatLLM.model_validate(
        {"url": f"http://{chat_addr}/v1/chat/completions", "history": 5}
    )
    f.ctx.backends = Backends(f.transcriber, f.speaker, ChatBackend(llm).conversation)
    addr = serve(app)
    ws = ("--ws", f"ws://{addr}/xiaozhi/v1/", "--protocol-version", "3")
    run = xiaozhi_vdev(addr, WAV, out=tmp_path / "vdev", args=(*FAST, *ws))
    assert run.returncode == 0, run.describe()
    board = run.device()
    assert board["protocol_version"] == 3
    calls = board["tool_calls"]
    assert [(c["name"], c["arguments"], c["result"]) for c in calls] == [
        ("self.audio_speaker.set_volume", {"volume": 30}, "true")
    ]
    assert board["volume"] == 30
    assert run.turns()[0]["sentences"] == ["Volume set."]

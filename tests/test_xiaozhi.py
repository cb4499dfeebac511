"""The xiaozhi front end end to end: a real server on loopback, a board speaking the
firmware's wire format (tests/xiaozhi_client.py), in-test backends (tests/device_fakes.py).

Voice turns are real speech (tests/data/vad_fixture_hello16k.wav) after seconds of silence,
as a board streams it from ``listen start`` on: 60 ms Opus packets (silence as DTX packets)
at four times real time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from device_fakes import SR, FakeSpeaker
from test_device import TraceLines, build, run
from xiaozhi_client import (
    DEVICE_ID,
    FRAME_S,
    Board,
    Received,
    messages,
    ota,
    packets,
    silence,
)

from echokit_fast.config import (
    ConfigError,
    ServerConfig,
    XiaozhiConfig,
    default_config,
    parse_config,
)
from echokit_fast.conversation.session import PREROLL_S
from echokit_fast.devices.xiaozhi.auth import sign
from echokit_fast.devices.xiaozhi.speech import LEAD_FRAMES
from echokit_fast.server.app import create_app

DATA = Path(__file__).resolve().parent / "data"
SPEECH_START, SPEECH_END = 8224, 70624  # the fixture's speech (official timestamps), samples


def _fixture() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        return w.readframes(w.getnframes())


FIXTURE = _fixture()
LEAD = silence(2.0)  # before the user speaks: four times what ends an EchoKit turn
QUESTION = LEAD + FIXTURE + silence(1.0)


def app_with(tmp_path: Path, **xiaozhi: Any) -> tuple[Any, Any]:
    config = default_config().model_copy(update={"xiaozhi": XiaozhiConfig(**xiaozhi)})
    return build(tmp_path, config=config)


def heard(got: list[Received]) -> int:
    """The samples the transcript covers (the fake transcriber answers ``heard <n>``)."""
    stt = messages(got)[0]
    assert stt["type"] == "stt", messages(got)
    return int(stt["text"].removeprefix("heard "))


def check_turn(board: Board, got: list[Received], speaker: FakeSpeaker) -> None:
    """One answer as the firmware needs it: stt, one tts start, the face, a subtitle before
    each segment's audio, whole 60 ms packets that decode to every sample, tts stop last."""
    kinds = [
        (r.message["type"], r.message.get("state")) if r.message else ("audio", None) for r in got
    ]
    assert kinds[:3] == [("stt", None), ("tts", "start"), ("llm", None)], kinds[:4]
    assert kinds[-1] == ("tts", "stop") and kinds.count(("tts", "start")) == 1
    sid = board.session_id
    assert all(m["session_id"] == sid for m in messages(got) if m["type"] != "alert")
    assert messages(got)[2] == {"type": "llm", "text": "🙂", "emotion": "happy", "session_id": sid}
    texts, first_audio = [], {}
    for i, r in enumerate(got):
        if r.is_tts("sentence_start"):
            texts.append(r.message["text"])
        elif r.packet is not None:
            assert texts, "audio before the first sentence_start"
            first_audio.setdefault(texts[-1], i)
    assert texts == ["Hello there.", "How are you?", "Fine."]
    assert list(first_audio) == texts  # each segment's audio after its own subtitle
    decoded = board.decode(packets(got))
    frame = board.rate * 60 // 1000
    expected = 0
    for text in texts:  # each segment resampled whole, its last packet padded
        out = round(len(speaker.produced[text]) * board.rate / SR)
        expected += -(-out // frame) * frame
    assert len(decoded) == expected
    produced = np.concatenate([speaker.produced[t] for t in texts])
    rms_in = float(np.sqrt(np.mean(produced**2)))
    rms_out = float(np.sqrt(np.mean(decoded**2)))
    assert 0.3 * rms_in < rms_out < 1.5 * rms_in


# --------------------------------------------------------------------------------------------
# OTA, hello, voice turns
# --------------------------------------------------------------------------------------------


def test_ota_hello_and_two_voice_turns_after_leading_silence(serve, tmp_path):
    app, f = build(tmp_path)
    addr = serve(app)
    client_id = str(uuid.uuid4())

    async def main():
        reply = await ota(addr, client_id=client_id)
        board = await Board.open(addr, client_id=client_id)
        turns = []
        for _ in range(2):
            await board.listen_start("auto")  # (after tts stop, as the firmware does)
            await board.speak(QUESTION)
            turns.append(await board.until("stop"))
        await board.close()
        return reply, board, turns

    with TraceLines() as trace:
        reply, board, turns = run(main())
        lines = [trace.get(), trace.get()]

    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["websocket"] == {"url": f"ws://{addr}/xiaozhi/v1/", "token": "", "version": 1}
    assert abs(body["server_time"]["timestamp"] - time.time() * 1000) < 60_000
    assert isinstance(body["server_time"]["timezone_offset"], int)
    assert body["firmware"] == {"version": "2.4.2", "url": ""}  # the board's own: no update
    assert "mqtt" not in body and "activation" not in body

    hello = board.server_hello
    assert hello["type"] == "hello" and hello["transport"] == "websocket"
    assert hello["version"] == 1 and len(hello["session_id"]) == 36
    assert hello["audio_params"] == {
        "format": "opus",
        "sample_rate": 24000,
        "channels": 1,
        "frame_duration": 60,
    }

    for got in turns:
        check_turn(board, got, f.speaker)
        n = heard(got)
        # the whole question, but of the 2 s before it only the pre-roll
        assert n >= SPEECH_END - SPEECH_START
        assert n <= PREROLL_S * SR + (SPEECH_END - SPEECH_START) + SR
    # one turn per question: the silence before each ended none
    assert [line["outcome"] for line in lines] == ["ok", "ok"]
    assert f.manager.sessions[DEVICE_ID].turns == 2
    history = f.convs.of(DEVICE_ID).history
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]


def test_realtime_mode_listens_again_without_listen_start(serve, tmp_path):
    app, f = build(tmp_path)
    addr = serve(app)

    async def main():
        board = await Board.open(addr)
        await board.listen_start("realtime")  # once: the board streams on through its replies
        first = await board.speak(QUESTION) and await board.until("stop")
        second = await board.speak(QUESTION) and await board.until("stop")
        await board.close()
        return first, second

    first, second = run(main())
    assert messages(first)[0]["type"] == messages(second)[0]["type"] == "stt"
    assert heard(second) <= PREROLL_S * SR + (SPEECH_END - SPEECH_START) + SR
    assert len(f.convs.of(DEVICE_ID).history) == 4


def test_realtime_mode_user_speaking_over_the_answer_cuts_it(serve, tmp_path):
    speaker = FakeSpeaker(length=lambda text: 10 * SR)  # 10 s a segment
    app, f = build(tmp_path, speaker=speaker)
    addr = serve(app)

    async def main():
        board = await Board.open(addr)
        await board.listen_start("realtime")
        await board.speak(QUESTION)
        before: list[Received] = []
        while len(packets(before)) < 10:
            before.append(await board.recv())
        # the microphone stays on (echo cancelled on the board): its silence cuts nothing
        await board.speak(silence(2.0))
        spoke = time.monotonic()
        talking = asyncio.create_task(board.speak(FIXTURE + silence(1.0)))
        cut = await board.until("stop")
        await talking
        answer = await board.until("stop")
        await board.close()
        return before, spoke, cut, answer

    before, spoke, cut, answer = run(main())
    assert [m.get("state") for m in messages(before)][:2] == [None, "start"]
    assert [m.get("state") for m in messages(before + cut)].count("stop") == 1
    assert cut[-1].at > spoke  # the speech cut it, not the silence before
    assert len(packets(before + cut)) < 60  # a few seconds of the 30 s answer
    assert "Hello there." in speaker.cancelled
    # the interruption is the next question, its start not lost
    assert messages(answer)[0]["type"] == "stt"
    assert heard(answer) >= SPEECH_END - SPEECH_START
    assert answer[-1].is_tts("stop") and len(f.transcriber.calls) == 2


def test_manual_mode_waits_for_listen_stop_and_v3_framing(serve, tmp_path):
    app, f = build(tmp_path)
    addr = serve(app)

    async def main():
        board = await Board.open(addr, version=3)  # every binary frame with its 4-byte header
        await board.listen_start("manual")
        sent = await board.speak(FIXTURE + silence(2.0))  # a pause the server VAD would end
        await board.listen_stop()
        got = await board.until("stop")
        await board.listen_start("manual")  # a press with nothing said: no answer at all
        await board.speak(silence(1.0))
        await board.listen_stop()
        await board.listen_start("manual")
        again = await board.speak(FIXTURE)
        await board.listen_stop()
        last = await board.until("stop")  # (the first thing after the silent press)
        await board.close()
        return board, sent, got, again, last

    board, sent, got, again, last = run(main())
    assert board.server_hello["version"] == 3
    check_turn(board, got, f.speaker)
    assert heard(got) == sent  # everything until listen stop, the trailing silence included
    assert heard(last) == again
    assert len(f.transcriber.calls) == 2  # the silent press asked nothing


def test_abort_during_the_reply_stops_its_audio(serve, tmp_path):
    speaker = FakeSpeaker(length=lambda text: 10 * SR)  # 10 s a segment
    app, _ = build(tmp_path, speaker=speaker)
    addr = serve(app)

    async def main():
        board = await Board.open(addr)
        await board.listen_start("auto")
        await board.speak(QUESTION)
        before: list[Received] = []
        while len(packets(before)) < 10:
            before.append(await board.recv())
        await board.abort()  # the button, while the board speaks
        after = await board.until("stop")
        await board.listen_start("auto")  # the board listens again once tts stop came
        await board.speak(QUESTION)
        nxt = await board.recv()
        await board.close()
        return before, after, nxt

    before, after, nxt = run(main())
    assert [m.get("state") for m in messages(before)][:2] == [None, "start"]
    # the stop comes at once: not the rest of the 30 s answer first
    assert len(packets(before + after)) < 10 + 2 * LEAD_FRAMES + 20
    assert "Hello there." in speaker.cancelled  # its synthesis stopped
    assert nxt.message is not None and nxt.message["type"] == "stt"  # no audio after the stop


def test_downlink_is_paced_in_real_time_after_the_pre_buffer(serve, tmp_path):
    speaker = FakeSpeaker(length=lambda text: SR)  # 1 s a segment, synthesised at once
    app, _ = build(tmp_path, speaker=speaker)
    addr = serve(app)

    async def main():
        board = await Board.open(addr, version=2)
        await board.listen_start("auto")
        await board.speak(QUESTION)
        got = await board.until("stop")
        await board.close()
        return board, got

    board, got = run(main())
    check_turn(board, got, speaker)
    times = [r.at for r in got if r.packet is not None]
    assert len(times) == 3 * 17  # 1 s at 24 kHz: 17 packets of 60 ms a segment
    for i, t in enumerate(times):  # at most the pre-buffer ahead of the board's playback
        assert t - times[0] >= (i - LEAD_FRAMES) * FRAME_S - 0.1, (i, t - times[0])
    assert times[-1] - times[0] < len(times) * FRAME_S + 2.0  # and not held back either
    # tts stop once the board has played the last packet, not when it was sent
    assert got[-1].at - times[-1] >= (LEAD_FRAMES - 1) * FRAME_S - 0.1


# --------------------------------------------------------------------------------------------
# Auth, refusals, idle close
# --------------------------------------------------------------------------------------------


async def refused(addr: str, **kw: Any) -> tuple[str, int | None]:
    """What a refused board gets: the text frame, then the Close code."""
    ws = await Board.connect(addr, **kw)
    text = await asyncio.wait_for(ws.recv(), 10)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    return text, ws.close_code


def test_tokens_allow_list_and_refusals(serve, tmp_path):
    allowed = "11:22:33:44:55:66"
    app, _ = app_with(tmp_path, tokens=["s3cret"], auth_key="k3y", allowed_devices=[allowed])
    addr = serve(app)
    cid = str(uuid.uuid4())

    async def main():
        out: dict[str, Any] = {}
        out["wrong"] = await refused(addr, token="wrong")
        out["none"] = await refused(addr)
        out["static"] = (await Board.open(addr, token="s3cret")).server_hello
        signed = (await ota(addr, client_id=cid)).json()["websocket"]["token"]
        out["signed"] = signed
        out["with_signed"] = (await Board.open(addr, token=signed, client_id=cid)).server_hello
        out["other_id"] = await refused(addr, token=signed, client_id=str(uuid.uuid4()))
        out["listed"] = (await Board.open(addr, device_id=allowed.upper())).server_hello
        out["listed_ota"] = (await ota(addr, device_id=allowed)).json()["websocket"]["token"]
        old = sign("k3y", cid, DEVICE_ID, int(time.time()) - 31 * 24 * 3600)
        out["expired"] = await refused(addr, token=old, client_id=cid)
        for path in ("/xiaozhi/v1/", "/xiaozhi/v1"):  # without Device-Id: 400, no upgrade
            with pytest.raises(websockets.InvalidStatus) as exc:
                await websockets.connect(f"ws://{addr}{path}")
            out[path] = exc.value.response.status_code
        return out

    out = run(main())
    for case in ("wrong", "none", "other_id", "expired"):
        assert out[case] == ("认证失败", 1008), case
    for case in ("static", "with_signed", "listed"):
        assert out[case]["type"] == "hello", case
    sig, ts = out["signed"].rsplit(".", 1)
    assert out["signed"] == sign("k3y", cid, DEVICE_ID, int(ts)) and "=" not in sig
    assert out["listed_ota"] == ""  # an allow-listed board needs no token
    assert out["/xiaozhi/v1/"] == out["/xiaozhi/v1"] == 400


def test_a_new_connection_of_the_board_pre_empts_the_old_one(serve, tmp_path):
    app, _ = build(tmp_path)
    addr = serve(app)

    async def main():
        old = await Board.open(addr)
        await asyncio.wait_for(old.listed.wait(), 20)  # attached
        new = await Board.open(addr)  # the same Device-Id
        with pytest.raises(websockets.ConnectionClosedOK):
            await old.recv(20)
        await asyncio.wait_for(new.listed.wait(), 20)
        await new.listen_start("auto")
        await new.speak(QUESTION)
        got = await new.until("stop")
        await new.close()
        return old.ws.close_code, got

    code, got = run(main())
    assert code == 1000
    assert messages(got)[0]["type"] == "stt"  # the session goes on with the new one


def test_idle_connection_is_closed(serve, tmp_path):
    app, _ = app_with(tmp_path, idle_close_s=0.5)
    addr = serve(app)

    async def main():
        board = await Board.open(addr)
        await board.listen_start("auto")
        await board.speak(silence(0.3))
        with pytest.raises(websockets.ConnectionClosedOK):
            await board.recv(20)
        return board.ws.close_code

    assert run(main()) == 1000


def test_ota_without_device_id_get_and_activate(serve, tmp_path):
    app, _ = app_with(tmp_path, websocket_url="wss://voice.example/xiaozhi/v1/")
    addr = serve(app)

    with httpx.Client(base_url=f"http://{addr}") as client:
        assert client.post("/xiaozhi/ota/", json={}).status_code == 400
        assert "wss://voice.example/xiaozhi/v1/" in client.get("/xiaozhi/ota/").text
        assert client.post("/xiaozhi/ota/activate").status_code == 200
        pushed = {"type": "system", "command": "reboot"}
        push = client.post(f"/xiaozhi/devices/{DEVICE_ID}/message", json=pushed)
        assert push.status_code == 403  # no [server] api_key: nobody may push
        reply = client.post("/xiaozhi/ota", headers={"Device-Id": DEVICE_ID}, content=b"{")
    assert reply.status_code == 200
    assert reply.json()["websocket"]["url"] == "wss://voice.example/xiaozhi/v1/"
    assert "firmware" not in reply.json()  # no version from the board, none configured


def test_alert_and_system_messages_pushed_to_a_board(serve, tmp_path):
    config = default_config().model_copy(update={"server": ServerConfig(api_key="adm1n")})
    app, _ = build(tmp_path, config=config)
    addr = serve(app)
    url = f"http://{addr}/xiaozhi/devices/{DEVICE_ID}/message"
    auth = {"Authorization": "Bearer adm1n"}
    alert = {"type": "alert", "status": "Warning", "message": "Battery low", "emotion": "sad"}

    async def main():
        board = await Board.open(addr)
        await asyncio.wait_for(board.listed.wait(), 20)  # attached to its session
        async with httpx.AsyncClient() as client:
            codes = [
                (await client.post(url, json=alert)).status_code,  # no key
                (await client.post(url, json={"type": "alert"}, headers=auth)).status_code,
                (
                    await client.post(url.replace("a0:", "ff:"), json=alert, headers=auth)
                ).status_code,
                (await client.post(url, json=alert, headers=auth)).status_code,
                (
                    await client.post(
                        url, json={"type": "system", "command": "reboot"}, headers=auth
                    )
                ).status_code,
            ]
        got = [(await board.recv()).message, (await board.recv()).message]
        await board.close()
        return codes, got

    codes, got = run(main())
    assert codes == [401, 400, 404, 200, 200]
    assert got == [alert, {"type": "system", "command": "reboot"}]


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

BASE = 'addr = "127.0.0.1:0"\n[gemini]\napi_key = "x"\n[xiaozhi]\n'


def test_config_section_is_validated_at_load():
    cfg = parse_config(BASE + "downlink_sample_rate = 16000\n", log_issues=False).config
    assert cfg.xiaozhi.downlink_sample_rate == 16000 and cfg.xiaozhi.enabled
    for body, where, words in (
        ("downlink_sample_rate = 22050", "xiaozhi.downlink_sample_rate", "16000"),
        ('firmware_version = "2.5.0"', "xiaozhi", "give both or neither"),
        ('websocket_url = "ftp://x/"', "xiaozhi.websocket_url", "ws://"),
        ('tokens = [""]', "xiaozhi.tokens", "empty"),
        ("idle_close_s = -1", "xiaozhi.idle_close_s", "0"),
    ):
        with pytest.raises(ConfigError) as exc:
            parse_config(BASE + body + "\n", log_issues=False)
        (issue,) = exc.value.issues
        assert issue.path == where and words in issue.message, (body, issue)


def test_disabled_front_end_has_no_routes():
    config = default_config().model_copy(update={"xiaozhi": XiaozhiConfig(enabled=False)})
    paths = [getattr(r, "path", "") for r in create_app(config).routes]
    assert not any(p.startswith("/xiaozhi") for p in paths)
    assert any(p.startswith("/xiaozhi") for p in (r.path for r in create_app().routes))

"""Whole conversations through ``echokit-fast serve``, spoken by the virtual device.

The server runs as the real CLI in a child process on a config with the embedded engines
(Silero VAD, Whisper base, hibari TTS) and a stand-in OpenAI-compatible LLM; the device is
``echokit-vdev`` (firmware/), which speaks synthesised questions at the firmware's frame size and
pace, decodes every event with the firmware's own rmp-serde enum and libopus, and writes the
reply audio to WAV files that our ASR transcribes back.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
from asr_helpers import wer
from harness import free_port, running_server, serve_process
from standins import ChatServer
from vdev import Run, vdev

from echokit_fast import audio
from echokit_fast.backends.asr.local import engine as asr
from echokit_fast.backends.tts.local import engine as tts

# Depends on what Whisper hears: re-run under each forced CPU ISA by scripts/test.sh.
pytestmark = pytest.mark.asr_quality

SR = 16000
SYSTEM = "You are Echo, a concise voice assistant for the end-to-end tests."
SPEED = ("--speed", "4", "--timeout", "120")  # 4x real time: microphone, playback, gaps

Q1 = "What is the capital of France?"
A1 = [
    "The capital of France is Paris. ",
    "It is a beautiful city on the river Seine, ",
    "famous for the Eiffel Tower and its museums.",
]
Q2 = "How tall is the Eiffel Tower?"
A2 = [
    "It is very tall and made of iron. ",
    "You can walk up the stairs or take the lift to the top.",
]


def text(deltas: list[str]) -> str:
    return "".join(deltas).strip()


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def spoken(speaker: tts.LocalSpeaker, text: str, rate: int) -> np.ndarray:
    """``text`` synthesised at ``rate``, cut 50 ms after the voice ends: the device's last
    frame with WAV samples is then the one carrying the end of the question."""
    x = speaker.synthesize(text, sample_rate=rate)
    end = int(np.flatnonzero(np.abs(x) > 0.02)[-1]) + rate // 20
    return x[:end]


@pytest.fixture(scope="module")
def wavs(tmp_path_factory, speaker) -> dict[str, Path]:
    """The questions as a user would record them, in formats the device must convert: Q1 at
    the engine's 24 kHz mono, Q2 as 44.1 kHz stereo; and the hello (16 kHz mono PCM16)."""
    d = tmp_path_factory.mktemp("wavs")
    q1 = d / "q1.wav"
    q1.write_bytes(audio.write_wav(spoken(speaker, Q1, 24000), 24000))
    mono = spoken(speaker, Q2, 44100)
    q2 = d / "q2.wav"
    q2.write_bytes(audio.write_wav(np.stack([mono, 0.5 * mono], axis=1), 44100))
    hello = d / "hello.wav"
    hello.write_bytes(audio.write_wav(speaker.synthesize("Hello, I am ready.", sample_rate=SR), SR))
    return {"q1": q1, "q2": q2, "hello": hello}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, wavs):
    """(server HOST:PORT, the LLM stand-in): ``echokit-fast serve`` on the embedded engines."""
    chat = ChatServer()
    with running_server(chat.app) as chat_addr:
        addr = f"127.0.0.1:{free_port()}"
        cfg = tmp_path_factory.mktemp("cfg") / "config.toml"
        cfg.write_text(
            f"""
addr = "{addr}"
hello_wav = "{wavs["hello"]}"

[asr]
platform = "local"
language = "en"

[tts]
platform = "local"

[llm]
platform = "openai_chat"
url = "http://{chat_addr}/v1/chat/completions"
history = 5

[[llm.sys_prompts]]
role = "system"
content = "{SYSTEM}"
"""
        )
        with serve_process(str(cfg)):
            yield addr, chat


def order(run: Run, turn: int, *names: str) -> None:
    """The first occurrence of each named event of ``turn`` comes in this order."""
    times = []
    for n in names:
        found = run.of(n, turn=turn)
        assert found, f"no {n} in turn {turn}: {[e['event'] for e in run.events]}"
        times.append(found[0]["t"])
    assert times == sorted(times), list(zip(names, times, strict=True))


def check_reply(run: Run, turn: dict, answer: list[str], whisper: asr.LocalWhisper) -> None:
    """The spoken reply: the LLM's text split into segments (first sentence alone), each with
    Opus audio and vowels; the WAV the device wrote transcribes back to the LLM's text."""
    segments = turn["segments"]
    assert len(segments) >= 2, segments
    assert segments[0]["text"] == answer[0].strip()  # the first sentence is spoken alone
    assert norm(" ".join(s["text"] for s in segments)) == norm(text(answer))
    for s in segments:
        assert s["packets"] >= 1 and s["samples"] == 1920 * s["packets"], s
        assert len(s["vowels"]) == s["packets"] and set(s["vowels"]) <= set(range(6)), s
    assert any(v for s in segments for v in s["vowels"]), "no vowel in a whole spoken reply"
    pcm, rate = audio.read_wav(Path(turn["reply_wav"]).read_bytes())
    assert rate == SR and pcm.shape[1] == 1
    assert len(pcm) == turn["reply_samples"] == sum(s["samples"] for s in segments)
    heard = asyncio.run(whisper.transcribe(pcm[:, 0], sample_rate=SR))
    assert wer(text(answer), heard) <= 0.15, heard


def test_two_turn_conversation_with_a_k0_reconnect(stack, wavs, whisper, tmp_path) -> None:
    addr, chat = stack
    base = len(chat.requests)
    chat.reply(A1)
    chat.reply(A2)
    run = vdev(
        addr,
        wavs["q1"],
        wavs["q2"],
        out=tmp_path,
        args=(*SPEED, "--id", "0a0000000001", "--reconnect-between-turns"),
    )
    assert run.returncode == 0, run.describe()
    dev = run.device()
    assert dev["ok"] and dev["error"] is None

    # boot: the hello arrives, byte for byte, on the first (non-reconnect) connection
    hello = wavs["hello"].read_bytes()
    assert (tmp_path / dev["id"] / "hello.wav").read_bytes() == hello
    assert dev["hello_bytes"] == len(hello)
    assert run.of("hello_end", conn=1) and not run.of("hello_start", conn=2)

    t1, t2 = run.turns()
    for n, turn in ((1, t1), (2, t2)):
        assert turn["end_vad"] and not turn["barged_in"]
        order(run, n, "start_chat", "last_speech_frame", "end_vad", "start_audio")
        # the final transcript comes between EndVad and the reply (interim ones may precede)
        final = run.of("asr", turn=n)[-1]["t"]
        assert run.of("end_vad", turn=n)[0]["t"] <= final <= run.of("start_audio", turn=n)[0]["t"]
        order(run, n, "start_audio", "first_audio", "end_audio", "playback_done", "end_response")
        assert turn["first_audio_latency"] > 0

    # the LLM heard each question (the device's final ASR text) after our system prompt ...
    r1, r2 = (r.json["messages"] for r in chat.requests[base : base + 2])
    assert len(chat.requests) == base + 2
    assert wer(Q1, t1["asr"][-1]) <= 0.25 and wer(Q2, t2["asr"][-1]) <= 0.25, (t1, t2)
    assert r1 == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": t1["asr"][-1]}]
    # ... and the second turn, on a new reconnect=true connection after K0, kept the history
    assert r2 == [
        *r1,
        {"role": "assistant", "content": text(A1)},
        {"role": "user", "content": t2["asr"][-1]},
    ]
    assert {e["conn"] for e in run.of("start_chat")} == {2, 3}  # one K0 cycle between turns

    check_reply(run, t1, A1, whisper)
    check_reply(run, t2, A2, whisper)


def test_history_survives_a_reconnect_and_resets_on_boot(stack, wavs, tmp_path) -> None:
    addr, chat = stack
    device = ("--id", "0a0000000002", *SPEED)
    chat.reply(A1)
    first = vdev(addr, wavs["q1"], out=tmp_path / "boot", args=device)
    assert first.returncode == 0, first.describe()
    user1 = first.turns()[0]["asr"][-1]

    # a device that was already booted connects with reconnect=true: the history is kept
    chat.reply(A2)
    again = vdev(addr, wavs["q2"], out=tmp_path / "again", args=(*device, "--no-hello"))
    assert again.returncode == 0, again.describe()
    assert again.device()["hello_bytes"] == 0 and not again.of("hello_start")
    assert chat.requests[-1].json["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user1},
        {"role": "assistant", "content": text(A1)},
        {"role": "user", "content": again.turns()[0]["asr"][-1]},
    ]

    # a reboot (a connection without reconnect=true) starts the conversation afresh
    chat.reply(A1)
    reboot = vdev(addr, wavs["q1"], out=tmp_path / "reboot", args=device)
    assert reboot.returncode == 0, reboot.describe()
    assert chat.requests[-1].json["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": reboot.turns()[0]["asr"][-1]},
    ]


def test_a_new_connection_preempts_the_running_reply(stack, wavs, whisper, tmp_path) -> None:
    addr, chat = stack
    base = len(chat.requests)
    # a slow answer: the first sentence is spoken at once, the rest would take seconds
    chat.reply(["Let me think about that. ", *(["Still thinking, "] * 20), "done."], delay=0.5)
    chat.reply(A2)
    gone = chat.disconnects
    run = vdev(
        addr,
        wavs["q1"],
        wavs["q2"],
        out=tmp_path,
        args=(*SPEED, "--id", "0a0000000003", "--barge-in", "0.2"),
    )
    assert run.returncode == 0, run.describe()
    t1, t2 = run.turns()
    assert t2["barged_in"] and not t1["barged_in"]  # turn 2 began by interrupting turn 1
    assert t1["t_end_response"] is None  # turn 1 never ended on its own connection
    assert [s["text"] for s in t1["segments"]] == ["Let me think about that."]

    # the old socket got EndResponse after the device reconnected; the new one carried turn 2
    barge = run.of("barge_in")[0]
    old, new = barge["conn"], barge["conn"] + 1
    assert [e for e in run.of("end_response", conn=old) if e["t"] > barge["t"]]
    assert run.of("start_chat", conn=new, turn=2) and run.of("end_response", conn=new, turn=2)
    # the abandoned LLM stream was dropped, and the unanswered question left the history
    assert chat.disconnects > gone
    assert chat.requests[base + 1].json["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": t2["asr"][-1]},
    ]
    check_reply(run, t2, A2, whisper)


def test_llm_failure_is_spoken_and_the_next_turn_works(stack, wavs, whisper, tmp_path) -> None:
    addr, chat = stack
    chat.fail(500)
    chat.reply(A2)
    run = vdev(addr, wavs["q1"], wavs["q2"], out=tmp_path, args=(*SPEED, "--id", "0a0000000004"))
    assert run.returncode == 0, run.describe()
    t1, t2 = run.turns()
    notice = "The language model failed (HTTP 500)."
    assert [s["text"] for s in t1["segments"]] == [notice]
    assert t1["segments"][0]["samples"] > SR // 2  # spoken, not only shown
    # the DisplayText twin of the notice is dropped, as the firmware does
    assert any("DisplayText" in e["reason"] for e in run.of("dropped", turn=1))
    pcm, _ = audio.read_wav(Path(t1["reply_wav"]).read_bytes())
    assert wer(notice, asyncio.run(whisper.transcribe(pcm[:, 0], sample_rate=SR))) <= 0.25
    # the failed turn's question is not kept; the next turn is answered normally
    assert chat.requests[-1].json["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": t2["asr"][-1]},
    ]
    check_reply(run, t2, A2, whisper)

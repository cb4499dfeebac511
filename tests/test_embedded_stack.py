"""The embedded engines together, for real: our TTS speaks, our ASR listens.

* TTS -> ASR round trip through the OpenAI-compatible HTTP APIs and the `openai` client.
* One whole device turn on the embedded default configuration (local VAD + Whisper + TTS,
  the LLM a stand-in OpenAI-compatible server): the device speaks a synthesised question,
  the LLM receives its transcript, and the spoken answer the device gets back transcribes to
  the LLM's text.
* The same for a xiaozhi board (``xiaozhi-vdev``: OTA, hello, 60 ms Opus up, the paced
  24 kHz Opus down), two turns.
"""

from __future__ import annotations

import asyncio
import io
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the Hugging Face hub in tests

from pathlib import Path

import numpy as np
import openai
import pytest
from asr_helpers import wer
from device_fakes import Device, name
from standins import ChatServer
from vdev import xiaozhi_vdev

from echokit_fast import audio
from echokit_fast.config import default_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

# Depends on what Whisper hears: re-run under each forced CPU ISA by scripts/test.sh.
pytestmark = pytest.mark.asr_quality

SR = 16000
FRAME = 16384  # the firmware's upload frame (8192 samples)


def test_tts_to_asr_round_trip_through_the_openai_client(serve, whisper, speaker) -> None:
    ctx = AppState()
    ctx.asr = whisper
    ctx.tts = speaker
    addr = serve(create_app(state=ctx))
    client = openai.OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0)
    sentences = [
        "The weather is lovely today, so we are going for a walk in the park.",
        "Please remind me to call my sister at six o'clock this evening.",
        "Turn on the kitchen lights and play some quiet music.",
    ]
    errors = total = 0.0
    for text in sentences:
        wav = client.audio.speech.create(
            model="tts-1", voice="alloy", input=text, response_format="wav"
        ).read()
        pcm, rate = audio.read_wav(wav)
        assert rate == 24000 and len(pcm) > rate  # a real utterance, over a second long
        heard = client.audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", io.BytesIO(wav)), language="en"
        ).text
        n = len(text.split())
        errors += wer(text, heard) * n
        total += n
    assert errors / total <= 0.10, f"word error rate {errors / total:.2%}"


def test_embedded_default_device_turn(serve, whisper, speaker) -> None:
    chat = ChatServer()
    answer = "The capital of France is Paris. It is famous for the Eiffel Tower."
    chat.reply(["The capital of France is Paris. ", "It is famous for the Eiffel Tower."])
    chat_addr = serve(chat.app)

    config = default_config(llm_url=f"http://{chat_addr}/v1")
    assert config.asr.platform == "local" and config.tts.platform == "local"
    ctx = AppState(config)
    ctx.asr = whisper  # the engines the config asks for, already loaded
    ctx.tts = speaker
    ctx.record_dir = Path("/nonexistent")
    addr = serve(create_app(state=ctx))

    question = "What is the capital of France?"
    spoken = speaker.synthesize(question, sample_rate=SR)
    # The firmware sends StartChat once its own VAD fires, with at most ~256 ms of pre-roll
    # (docs/protocol.md#device-behaviour); the synthesised clip starts with ~0.3 s of silence, so
    # start 200 ms before the voice like a device would.
    onset = int(np.argmax(np.abs(spoken) > 0.02))
    silence = np.zeros(2 * SR, np.float32)
    pcm = audio.float_to_pcm16(np.concatenate([spoken[max(0, onset - SR // 5) :], silence]))

    async def turn() -> list:
        dev = await Device.open(addr, "e2e0001", opus=True, vowel=True, stream_asr=True)
        await dev.command("StartChat")
        await dev.audio(pcm, FRAME)
        events = await dev.until("EndResponse", timeout=120)
        await dev.close()
        return events

    events = asyncio.run(asyncio.wait_for(turn(), 180))
    names = [name(e) for e in events]
    assert "EndVad" in names and names[-1] == "EndResponse", names
    final_asr = [e["ASR"]["text"] for e in events[names.index("EndVad") :] if name(e) == "ASR"]
    assert final_asr and wer(question, final_asr[0]) <= 0.25, final_asr

    # the LLM got the transcript as the user's message, after the system prompt
    messages = chat.requests[-1].json["messages"]
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert messages[-1]["content"] == final_asr[0]

    # what the device hears, decoded as the firmware does (a fresh decoder per segment)
    assert "AudioChunkWithVowel" in names
    heard_parts = []
    decoder = audio.OpusDecoder(SR)
    for ev in events:
        if name(ev) == "StartAudio":
            decoder.reset()
        elif name(ev) == "AudioChunkWithVowel":
            heard_parts.append(decoder.decode(ev["AudioChunkWithVowel"]["data"]))
    reply_audio = np.concatenate(heard_parts)
    assert len(reply_audio) > 2 * SR
    heard = asyncio.run(whisper.transcribe(reply_audio, sample_rate=SR))
    assert wer(answer, heard) <= 0.15, heard


def test_embedded_default_xiaozhi_board_two_turns(serve, whisper, speaker, tmp_path) -> None:
    chat = ChatServer()
    turns = [
        ("What is the capital of France?", "The capital of France is Paris. It is lovely."),
        ("Please turn on the kitchen lights.", "The kitchen lights are on now. Anything else?"),
    ]
    for _, answer in turns:
        chat.reply([answer])
    chat_addr = serve(chat.app)
    ctx = AppState(default_config(llm_url=f"http://{chat_addr}/v1"))
    ctx.asr, ctx.tts = whisper, speaker
    ctx.record_dir = Path("/nonexistent")
    addr = serve(create_app(state=ctx))

    wavs = []
    for i, (question, _) in enumerate(turns):
        wavs.append(tmp_path / f"q{i}.wav")
        wavs[-1].write_bytes(audio.write_wav(speaker.synthesize(question, sample_rate=SR), SR))
    # the board streams from `listen start` on: 1.5 s of silence, the question, silence
    args = ("--speed", "2", "--gap", "1.5", "--timeout", "120")
    run = xiaozhi_vdev(addr, *wavs, out=tmp_path / "board", args=args)
    assert run.returncode == 0, run.describe()
    records = run.turns()
    assert len(records) == 2
    for (question, answer), rec in zip(turns, records, strict=True):
        assert len(rec["stt"]) == 1 and wer(question, rec["stt"][0]) <= 0.25, rec["stt"]
        assert "".join(rec["sentences"]).replace(" ", "") == answer.replace(" ", "")
        assert rec["reply_rate"] == 24000 and rec["pacing"]["dropped_full"] == 0
        reply, rate = audio.read_wav(Path(rec["reply_wav"]).read_bytes())
        assert rate == 24000 and len(reply) > 2 * rate
        heard = asyncio.run(whisper.transcribe(reply[:, 0], sample_rate=rate))
        assert wer(answer, heard) <= 0.15, heard
    # the LLM got each transcript as the user's message, the second after the first exchange
    sent = chat.requests[-1].json["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [r["stt"][0] for r in records]


def test_vad_finds_synthesised_speech_where_it_was_placed(speaker) -> None:
    from echokit_fast.backends.vad.silero import get_speech_timestamps

    utterances = [
        speaker.synthesize("Good morning, how are you?", sample_rate=SR),
        speaker.synthesize("Please turn off the lights.", sample_rate=SR),
    ]
    gap = np.zeros(int(1.5 * SR), np.float32)
    parts, spans, at = [gap], [], len(gap)
    for u in utterances:
        voiced = np.flatnonzero(np.abs(u) > 0.02)
        spans.append((at + voiced[0], at + voiced[-1]))
        parts += [u, gap]
        at += len(u) + len(gap)
    clip = np.concatenate(parts)
    # 44.1 kHz stereo, as a user might upload it: resampled and mixed by get_speech_timestamps
    stereo = np.stack([clip, clip], axis=1)
    segs = get_speech_timestamps(audio.resample(clip, SR, 44100), 44100)
    segs16 = get_speech_timestamps(stereo, SR)
    for found, rate in ((segs, 44100), (segs16, SR)):
        scale = SR / rate
        found = [(s["start"] * scale, s["end"] * scale) for s in found]
        assert found, "no speech found"
        margin = 0.25 * SR  # padding, window granularity, the voice decaying under 0.02
        for s, e in found:  # every segment is inside one utterance (never in the 1.5 s gaps)
            assert any(a - margin <= s and e <= b + margin for a, b in spans), (s, e, spans)
        for a, b in spans:  # and every utterance is mostly covered
            covered = sum(max(0.0, min(e, b) - max(s, a)) for s, e in found)
            assert covered >= 0.8 * (b - a), (a, b, found)

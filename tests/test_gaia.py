"""The acceptance case of issue 4: the reference's `examples/gaia/config.toml`, with its three
local services replaced by stand-ins on loopback ports (everything else unchanged), serving a
whole voice turn to a device through the real remote clients: OpenAI-compatible Whisper API,
OpenAI-compatible chat completions (LlamaEdge) and gsv_tts streaming TTS. The same turn runs on
the config printed in the EchoKit course slides (the pre-0.3 format: no ``platform`` in
``[asr]`` and ``[llm]``).
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest
from device_fakes import Device, name
from standins import ASRServer, ChatServer, TTSServer

from echokit_fast.audio import OpusDecoder, write_wav
from echokit_fast.config import parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"
SR = 16000
FRAME = 16384


def _speech_frames() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return pcm[2 * 4096 :] + bytes(2 * SR * 2)  # from 256 ms before the speech, then 2 s silence


@pytest.mark.parametrize("config", ["gaia_config.toml", "configs/course/slides.toml"])
def test_gaia_config_voice_turn_through_the_remote_clients(
    serve, tmp_path: Path, config: str
) -> None:
    asr, chat, tts = ASRServer(), ChatServer(), TTSServer()
    asr.answer("What's the weather like in Paris?")
    chat.reply(["It is sunny in Paris. ", "Take your sunglasses and enjoy the walk!"])
    ports = {name: serve(srv.app) for name, srv in (("asr", asr), ("chat", chat), ("tts", tts))}

    text = (DATA / config).read_text()
    text = text.replace("localhost:9092", ports["asr"]).replace("localhost:9091", ports["chat"])
    text = text.replace("localhost:9094", ports["tts"])
    hello = write_wav(np.sin(np.arange(3200, dtype=np.float32) / 5) * 0.2, SR)
    (tmp_path / "hello.wav").write_bytes(hello)
    config = parse_config(text, filename="gaia/config.toml", base_dir=tmp_path).config

    ctx = AppState(config)
    ctx.record_dir = tmp_path / "record"
    addr = serve(create_app(state=ctx))

    async def turn() -> tuple[list, list]:
        dev = await Device.open(addr, "a0b1c2d3e4f5", opus=True, vowel=True, stream_asr=True)
        hello_events = await dev.until("HelloEnd")
        await dev.command("StartChat")
        await dev.audio(_speech_frames(), FRAME)
        events = await dev.until("EndResponse", timeout=60)
        await dev.close()
        return hello_events, events

    hello_events, events = asyncio.run(asyncio.wait_for(turn(), 120))

    # hello: the file verbatim in 2048-byte chunks
    assert hello_events[0] == "HelloStart"
    chunks = [e["HelloChunk"]["data"] for e in hello_events[1:-1]]
    assert b"".join(chunks) == hello and all(len(c) == 2048 for c in chunks[:-1])

    names = [name(e) for e in events]
    assert names.index("EndVad") < names.index("StartAudio")
    final = [e for e in events[names.index("EndVad") :] if name(e) == "ASR"]
    assert final == [{"ASR": {"text": "What's the weather like in Paris?"}}]

    # ASR request exactly as the reference sends it (docs/protocol.md#transcription-requests)
    req = asr.requests[-1]
    assert [n for n, _f, _v in req.parts] == ["file", "language"]
    assert req.part("language") == "auto" and "authorization" not in req.headers
    wav = req.part("file")
    assert isinstance(wav, bytes) and wav[:4] == b"RIFF" and len(wav) > 44 + 2 * SR

    # LLM request: one Bearer (the config says "Bearer gaia-1234"), gaia's model and prompt
    body = chat.requests[-1].json
    assert chat.requests[-1].headers["authorization"] == "Bearer gaia-1234"
    assert list(body)[:1] == ["stream"] and body["stream"] is True and body["model"] == "default"
    assert body["messages"][0]["role"] == "system"
    assert "helpful assistant" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "What's the weather like in Paris?"}

    # TTS: one stream_gsv request per segment, speaker cooper at 16 kHz
    segments = [e["StartAudio"]["text"] for e in events if name(e) == "StartAudio"]
    assert segments == ["It is sunny in Paris.", "Take your sunglasses and enjoy the walk!"]
    # segments are synthesised in parallel, so requests may arrive in any order; the device
    # still gets them in order (the StartAudio sequence above)
    assert sorted(r.json["input"] for r in tts.requests) == sorted(segments)
    assert all(r.json["speaker"] == "cooper" and r.json["sample_rate"] == SR for r in tts.requests)

    # audio: Opus packets with vowels; nothing of the TTS audio is lost (the reference drops
    # the tail; docs/compatibility.md#device-audio)
    decoded = 0
    dec = OpusDecoder(SR)
    for ev in events:
        if name(ev) == "StartAudio":
            dec.reset()
        elif name(ev) == "AudioChunkWithVowel":
            decoded += len(dec.decode(ev["AudioChunkWithVowel"]["data"]))
    expected = sum(-(-round(tts.duration(s) * SR) // 1920) * 1920 for s in segments)
    assert decoded == expected
    assert names[-2:] == ["EndAudio", "EndResponse"]

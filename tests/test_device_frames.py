"""Exact frames: every byte the server writes to the device for whole turns.

The expected frames are built here from the native codec and Opus encoder (unchanged by any
refactoring of the server's Python layers), independently of the server's own frame-building
code: control events through ``encode_event``, audio by encoding the fake speaker's samples
in its 700-sample chunks with a fresh 120 ms encoder per segment. A change of one byte, one
frame or the order of frames fails these tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from device_fakes import (
    SR,
    Device,
    FakeConversation,
    FakeSpeaker,
    FakeTranscriber,
    llm_error,
    tone,
)
from test_device import SILENCE, SPEECH, build, run

from echokit_fast.audio import DOWNLINK_OPUS_COMPLEXITY, OpusEncoder, float_to_pcm16, write_wav
from echokit_fast.config import default_config
from echokit_fast.devices.echokit.protocol import encode_audio_chunk, encode_event

END_RESPONSE = encode_event("EndResponse")
END_AUDIO = encode_event("EndAudio")


def text_event(variant: str, text: str) -> bytes:
    return encode_event({variant: {"text": text}})


def opus_frames(pcm: np.ndarray, *, vowel: bool, chunk: int = 700) -> list[bytes]:
    """The AudioChunk[WithVowel] frames of one segment: the samples pushed chunk by chunk
    into a fresh 16 kHz 120 ms encoder at the downlink's complexity, the remainder zero-padded
    at the end."""
    enc = OpusEncoder(SR, 120, DOWNLINK_OPUS_COMPLEXITY)
    out: list[bytes] = []
    for i in range(0, len(pcm), chunk):
        piece = pcm[i : i + chunk]
        if vowel:
            out += [encode_audio_chunk(p, v) for p, v in enc.push_with_vowels(piece)]
        else:
            out += [encode_audio_chunk(p) for p in enc.push(piece)]
    if vowel:
        out += [encode_audio_chunk(p, v) for p, v in enc.flush_with_vowels()]
    else:
        out += [encode_audio_chunk(p) for p in enc.flush()]
    return out


def raw_frames(pcm: np.ndarray, chunk: int = 700) -> list[bytes]:
    return [
        encode_audio_chunk(float_to_pcm16(pcm[i : i + chunk])) for i in range(0, len(pcm), chunk)
    ]


def segment(text: str, frames: list[bytes]) -> list[bytes]:
    return [text_event("StartAudio", text), *frames, END_AUDIO]


def hello_frames(data: bytes) -> list[bytes]:
    chunks = [data[i : i + 2048] for i in range(0, len(data), 2048)]
    return [
        encode_event("HelloStart"),
        *(encode_event({"HelloChunk": {"data": c}}) for c in chunks),
        encode_event("HelloEnd"),
    ]


def assert_frames(got: list[bytes], want: list[bytes]) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"frame {i} differs: {g[:40]!r} != {w[:40]!r}"


def test_voice_turn_opus_vowel_with_hello_and_llm_failure_exact_frames(serve, tmp_path):
    hello = write_wav(tone(5000), SR)
    path = tmp_path / "hello.wav"
    path.write_bytes(hello)
    config = default_config().model_copy(update={"hello_path": path})
    speaker = FakeSpeaker()
    app, _f = build(
        tmp_path,
        config=config,
        transcriber=FakeTranscriber(text="what time is it"),
        speaker=speaker,
        script=lambda t: ["First sentence. ", llm_error()],
    )
    addr = serve(app)

    async def main() -> list[bytes]:
        d = await Device.open(addr, "golden1", opus=True, vowel=True, stream_asr=True)
        greeting = await d.until_bytes(encode_event("HelloEnd"))
        await d.command("StartChat")
        await d.audio(SPEECH + SILENCE)
        frames = await d.until_bytes(END_RESPONSE)
        await d.close()
        return greeting + frames

    got = run(main())
    notice = FakeConversation.NOTICE
    want = [
        *hello_frames(hello),
        encode_event("EndVad"),
        text_event("ASR", "what time is it"),
        *segment("First sentence.", opus_frames(speaker.audio("First sentence."), vowel=True)),
        text_event("DisplayText", notice),
        *segment(notice, opus_frames(speaker.audio(notice), vowel=True)),
        END_RESPONSE,
    ]
    assert_frames(got, want)


def test_text_turn_raw_with_tts_failure_exact_frames(serve, tmp_path):
    speaker = FakeSpeaker(fail_on="Second")
    app, _f = build(
        tmp_path,
        speaker=speaker,
        script=lambda t: ["First sentence. Second sentence. Third sentence."],
    )
    addr = serve(app)

    async def main() -> list[bytes]:
        d = await Device.open(addr, "golden2")
        await d.command("Text", input="hello")
        frames = await d.until_bytes(END_RESPONSE)
        await d.close()
        return frames

    got = run(main())
    second = speaker.audio("Second sentence.")
    want = [
        text_event("ASR", "hello"),
        *segment("First sentence.", raw_frames(speaker.audio("First sentence."))),
        *segment("Second sentence.", raw_frames(second[:700])),  # one chunk, then it failed
        text_event("DisplayText", FakeSpeaker.NOTICE),
        *segment(FakeSpeaker.NOTICE, []),  # shown, not spoken: the speaker is what failed
        END_RESPONSE,
    ]
    assert_frames(got, want)


def test_submit_turn_opus_with_asr_failure_then_empty_turn_exact_frames(serve, tmp_path):
    speaker = FakeSpeaker()
    app, _f = build(tmp_path, transcriber=FakeTranscriber(fail=True), speaker=speaker)
    addr = serve(app)

    async def main() -> tuple[list[bytes], list[bytes]]:
        d = await Device.open(addr, "golden3", opus=True)
        await d.command("StartChat")
        await d.audio(SPEECH)
        await d.command("Submit")
        failed = await d.until_bytes(END_RESPONSE)
        await d.command("StartChat")
        await d.audio(SILENCE)
        await d.command("Submit")
        empty = await d.until_bytes(END_RESPONSE)
        await d.close()
        return failed, empty

    failed, empty = run(main())
    notice = FakeTranscriber.NOTICE
    want: list[Any] = [
        text_event("DisplayText", notice),
        *segment(notice, opus_frames(speaker.audio(notice), vowel=False)),
        END_RESPONSE,
    ]
    assert_frames(failed, want)
    assert_frames(empty, [END_RESPONSE])

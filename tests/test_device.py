"""The device server end to end: a real uvicorn server on loopback, a websockets client acting
as the EchoKit device, in-test backends (tests/device_fakes.py).

Voice turns use real speech (tests/data/vad_fixture_hello16k.wav, from 256 ms before the
speech like the firmware's pre-roll) padded with silence and streamed in the firmware's
16 384-byte frames, as fast as the server takes them.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import logging
import queue
import re
import struct
import threading
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from device_fakes import (
    SR,
    Conversations,
    Device,
    FakeConversation,
    FakeSpeaker,
    FakeTranscriber,
    Gate,
    SentenceSegmenter,
    default_script,
    llm_error,
    name,
    tone,
)

from echokit_fast.audio import OpusDecoder, float_to_pcm16, pcm16_to_float, vowel_of, write_wav
from echokit_fast.backends.base import Backends, SpeakNow
from echokit_fast.config import default_config
from echokit_fast.conversation.session import Settings
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"
PREROLL = 4096  # the fixture's speech starts at ~8224: keep 256 ms before it
SILENCE = bytes(2 * SR * 2)  # 2 s


def _fixture() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        return w.readframes(w.getnframes())


SPEECH = _fixture()[2 * PREROLL :]
SPEECH_END = 70624 - PREROLL  # end of the fixture's speech (official timestamps), in samples


def run(coro: Any, timeout: float = 120) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def build(
    tmp_path: Path,
    *,
    transcriber: FakeTranscriber | None = None,
    speaker: FakeSpeaker | None = None,
    script: Any = default_script,
    settings: Settings | None = None,
    config: Any = None,
    **ctx_items: Any,
) -> tuple[Any, SimpleNamespace]:
    ctx = AppState(config or default_config())
    f = SimpleNamespace(
        transcriber=transcriber or FakeTranscriber(),
        speaker=speaker or FakeSpeaker(),
        convs=Conversations(script),
        ctx=ctx,
    )
    ctx.backends = Backends(f.transcriber, f.speaker, f.convs)
    ctx.record_dir = tmp_path / "record"
    if settings is not None:
        ctx.device_settings = settings
    ctx_items.setdefault("segmenter", SentenceSegmenter)
    for key, value in ctx_items.items():
        # segmenter=None: the server's default (the docs/protocol.md#segments grouper)
        if value is not None:
            setattr(ctx, key, value)
    app = create_app(state=ctx)
    f.manager = ctx.sessions
    return app, f


def segments(events: list[Any]) -> list[tuple[str, list[Any]]]:
    """``[(text, audio events)]`` of the StartAudio..EndAudio groups, checking the nesting."""
    out: list[tuple[str, list[Any]]] = []
    current: tuple[str, list[Any]] | None = None
    for ev in events:
        n = name(ev)
        if n == "StartAudio":
            assert current is None, "StartAudio inside a segment"
            current = (ev["StartAudio"]["text"], [])
        elif n == "EndAudio":
            assert current is not None, "EndAudio outside a segment"
            out.append(current)
            current = None
        elif n in ("AudioChunk", "AudioChunkWithVowel"):
            assert current is not None, "audio outside a segment"
            current[1].append(ev)
    assert current is None, "segment not closed"
    return out


def decode_segment(audio_events: list[Any]) -> np.ndarray:
    dec = OpusDecoder(SR)  # the device resets its decoder at every StartAudio
    parts = [dec.decode(next(iter(ev.values()))["data"]) for ev in audio_events]
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def padded_frames(pcm: np.ndarray) -> list[np.ndarray]:
    s16 = np.frombuffer(float_to_pcm16(pcm), "<i2")
    s16 = np.concatenate([s16, np.zeros(-len(s16) % 1920, np.int16)])
    return [s16[i : i + 1920] for i in range(0, len(s16), 1920)]


class TraceLines(logging.Handler):
    """Collects the JSON lines of the ``echokit_fast.trace`` logger (any thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.logger = logging.getLogger("echokit_fast.trace")

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.put(json.loads(record.getMessage()))

    def __enter__(self) -> TraceLines:
        self._level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)

    def get(self, timeout: float = 20) -> dict:
        return self.lines.get(timeout=timeout)


async def on_server(f: SimpleNamespace, coro_fn: Any, timeout: float = 30) -> Any:
    """Run ``coro_fn()`` on the server's event loop."""
    assert f.manager.loop is not None
    fut = asyncio.run_coroutine_threadsafe(coro_fn(), f.manager.loop)
    return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)


# --------------------------------------------------------------------------------------------
# A whole voice turn as the firmware does it
# --------------------------------------------------------------------------------------------


def test_voice_turn_opus_vowel_stream_asr_in_order(serve, tmp_path):
    app, f = build(tmp_path)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "a0b1c2d3e4f5", opus=True, vowel=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(SPEECH + SILENCE)
        events = await d.until("EndResponse")
        await d.close()
        return events

    with TraceLines() as trace:
        events = run(main())
        line = trace.get()

    names = [name(e) for e in events]
    # docs/protocol.md#wire-sequence: (no interim: one uninterrupted utterance) EndVad, final ASR,
    # segments, EndResponse
    assert names[:2] == ["EndVad", "ASR"] and names[-1] == "EndResponse"
    assert names.count("EndResponse") == 1
    last_asr = f.transcriber.calls[-1]
    assert events[1]["ASR"]["text"] == f"heard {len(last_asr)}"
    assert len(last_asr) >= SPEECH_END  # the transcript covers the whole utterance
    np.testing.assert_array_equal(last_asr, pcm16_to_float(SPEECH[: 2 * len(last_asr)]))
    segs = segments(events[2:-1])
    assert [t for t, _ in segs] == ["Hello there.", "How are you?", "Fine."]
    assert set(names[2:-1]) == {"StartAudio", "AudioChunkWithVowel", "EndAudio"}
    for text, audio in segs:
        produced = f.speaker.produced[text]
        decoded = decode_segment(audio)
        # no tail loss: every sample, zero-padded to whole 120 ms packets (docs/protocol.md#opus and
        # docs/compatibility.md#device-audio)
        assert len(decoded) == -(-len(produced) // 1920) * 1920
        assert len(audio) == -(-len(produced) // 1920)
        rms_in = float(np.sqrt(np.mean(produced**2)))
        rms_out = float(np.sqrt(np.mean(decoded[: len(produced)] ** 2)))
        assert 0.5 * rms_in < rms_out < 1.5 * rms_in
        vowels = [ev["AudioChunkWithVowel"]["vowel"] for ev in audio]
        assert vowels == [vowel_of(fr) for fr in padded_frames(produced)]
    # the conversation got the transcript; history as the Conversation keeps it
    conv = f.convs.of("a0b1c2d3e4f5")
    assert conv.history[0] == {"role": "user", "content": events[1]["ASR"]["text"]}
    # the per-turn trace: one JSON line, every stage, in causal order
    assert line["device"] == "a0b1c2d3e4f5" and line["outcome"] == "ok"
    ms = line["ms"]
    order = ["speech_end", "end_vad", "asr_done", "llm_first", "tts_first", "first_frame"]
    assert set(ms) == {*order, "last_frame"}
    seq = [ms[s] for s in [*order, "last_frame"]]
    assert seq == sorted(seq) and ms["speech_end"] == 0
    assert line["segments"] == 3


def pause_rounds() -> Any:
    """The embedded default with the rounds starting at each pause, as the reference's do
    (``early_asr`` off: no transcription at the first quiet window, see test_smart_turn.py)."""
    config = default_config()
    vad = config.asr.vad.model_copy(update={"early_asr": False})
    return config.model_copy(update={"asr": config.asr.model_copy(update={"vad": vad})})


def test_interim_asr_when_the_user_pauses(serve, tmp_path):
    app, f = build(tmp_path, config=pause_rounds())
    addr = serve(app)
    first = _fixture()[2 * PREROLL : 2 * 72000]  # the speech, cut right after it ends

    async def main():
        d = await Device.open(addr, "pause", opus=True, vowel=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(first + SPEECH + SILENCE)
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    names = [name(e) for e in events]
    assert names[:3] == ["ASR", "EndVad", "ASR"], names[:4]
    calls = f.transcriber.calls
    assert len(calls) == 2  # one per pause: after the first utterance, after the second
    assert events[0]["ASR"]["text"] == f"heard {len(calls[0])}"  # interim: up to the pause
    assert events[2]["ASR"]["text"] == f"heard {len(calls[1])}"  # final: both utterances
    assert len(first) // 2 <= len(calls[0]) < len(first) // 2 + 8192
    assert len(calls[1]) >= len(first) // 2 + SPEECH_END
    assert f.transcriber.started[0].cancelled is False  # it had finished: no cancel needed
    assert names[-1] == "EndResponse"


def test_speculative_asr_is_cancelled_when_speech_continues(serve, tmp_path):
    gate = Gate()  # transcripts never finish in time
    app, f = build(tmp_path, transcriber=FakeTranscriber(gate=gate), config=pause_rounds())
    addr = serve(app)
    first = _fixture()[2 * PREROLL : 2 * 72000]

    async def main():
        d = await Device.open(addr, "spec", opus=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(first + SPEECH + SILENCE)
        ev = await d.recv()
        assert ev == "EndVad"  # no interim ASR: the first round's transcript was not done
        gate.open()
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    assert name(events[0]) == "ASR"
    assert events[0]["ASR"]["text"] == f"heard {len(f.transcriber.calls[1])}"
    assert [t.cancelled for t in f.transcriber.started] == [True, False]


# --------------------------------------------------------------------------------------------
# Output modes, hello
# --------------------------------------------------------------------------------------------


def test_raw_mode_chunks_at_most_32000_bytes(serve, tmp_path):
    speaker = FakeSpeaker(chunk=40000, length=lambda t: 40000 + 1111 * len(t))
    app, f = build(tmp_path, speaker=speaker, script=lambda t: ["Long answer here."])
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "raw")
        await d.command("Text", input="tell me")
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    assert [name(e) for e in events[:2]] == ["ASR", "StartAudio"]
    ((text, audio),) = segments(events)
    assert all(name(e) == "AudioChunk" for e in audio)
    sizes = [len(e["AudioChunk"]["data"]) for e in audio]
    assert max(sizes) == 32000 and all(s <= 32000 for s in sizes)
    # 40000-sample TTS chunks (80 000 bytes) become 32000 + 32000 + 16000 byte pieces
    assert sizes[:3] == [32000, 32000, 16000]
    raw = b"".join(e["AudioChunk"]["data"] for e in audio)
    assert raw == float_to_pcm16(f.speaker.produced[text])


def test_hello_exact_bytes_on_fresh_connection_only(serve, tmp_path):
    hello = write_wav(tone(5000), SR)
    path = tmp_path / "hello.wav"
    path.write_bytes(hello)
    config = default_config().model_copy(update={"hello_path": path})
    app, _f = build(tmp_path, config=config)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "hello", opus=True, vowel=True, stream_asr=True)
        events = await d.until("HelloEnd")
        await d.command("Text", input="hi")
        after = await d.recv()
        await d.close()
        d = await Device.open(addr, "hello", reconnect=True, opus=True, stream_asr=True)
        await d.command("Text", input="again")
        first_on_reconnect = await d.recv()
        await d.until()
        await d.close()
        return events, after, first_on_reconnect

    events, after, first_on_reconnect = run(main())
    assert events[0] == "HelloStart" and events[-1] == "HelloEnd"
    chunks = [e["HelloChunk"]["data"] for e in events[1:-1]]
    assert [len(c) for c in chunks] == [2048] * 4 + [len(hello) - 4 * 2048]
    assert b"".join(chunks) == hello  # the file verbatim, header included (docs/protocol.md#hello)
    assert after == {"ASR": {"text": "hi"}}
    assert first_on_reconnect == {"ASR": {"text": "again"}}  # no hello with reconnect=true


# --------------------------------------------------------------------------------------------
# Sessions: history, pre-emption, interruption
# --------------------------------------------------------------------------------------------


def test_reconnect_keeps_history_otherwise_reset(serve, tmp_path):
    app, f = build(tmp_path)
    addr = serve(app)

    async def turn(text: str, **flags: bool) -> None:
        d = await Device.open(addr, "hist", opus=True, **flags)
        await d.command("Text", input=text)
        await d.until()
        await d.close()

    async def main():
        await turn("one")
        conv = f.convs.of("hist")
        assert [m["content"] for m in conv.history if m["role"] == "user"] == ["one"]
        await turn("two", reconnect=True)
        assert f.convs.of("hist") is conv and conv.resets == 0
        assert [m["content"] for m in conv.history if m["role"] == "user"] == ["one", "two"]
        await turn("three")  # a fresh connection: prompts reloaded, history reset
        assert f.convs.of("hist") is conv and conv.resets == 1
        assert [m["content"] for m in conv.history if m["role"] == "user"] == ["three"]
        # reconnect=true for a device the server does not know: a new conversation
        d = await Device.open(addr, "unknown", reconnect=True, opus=True)
        await d.command("Text", input="x")
        await d.until()
        await d.close()
        assert f.convs.of("unknown").resets == 0 and len(f.convs.made["unknown"]) == 1

    run(main())


def test_new_connection_preempts_the_running_turn(serve, tmp_path):
    gate = Gate()

    def script(text: str) -> list[Any]:
        return ["One. ", gate, "Two."] if text == "hi" else ["Sure."]

    app, f = build(tmp_path, script=script)
    addr = serve(app)

    async def main():
        old = await Device.open(addr, "barge", opus=True, vowel=True, stream_asr=True)
        await old.command("Text", input="hi")
        events = await old.until("EndAudio")
        assert [t for t, _ in segments(events)] == ["One."]
        await gate.until_reached()
        conv = f.convs.of("barge")
        new = await Device.open(addr, "barge", reconnect=True, opus=True, stream_asr=True)
        # the old socket: one EndResponse, then it is closed
        assert await old.recv() == "EndResponse"
        with pytest.raises(websockets.ConnectionClosed):
            await old.recv()
        assert await asyncio.to_thread(conv.cancelled.wait, 20)
        await new.command("StartChat")
        await new.command("Text", input="go on")
        events = await new.until()
        await new.close()
        assert f.convs.of("barge") is conv  # same session, history kept (reconnect)
        return events

    events = run(main())
    assert [name(e) for e in events[:2]] == ["EndVad", "ASR"]
    assert [t for t, _ in segments(events)] == ["Sure."]
    gate.open()


def test_start_chat_during_playback_cancels_the_reply(serve, tmp_path):
    gate = Gate()
    speaker = FakeSpeaker(gates={"How are you?": gate})

    def script(text: str) -> list[Any]:
        return default_script(text) if text == "hi" else ["Done."]

    app, f = build(tmp_path, speaker=speaker, script=script)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "int", opus=True, vowel=True, stream_asr=True)
        await d.command("Text", input="hi")
        first = await d.until("EndAudio")
        assert await d.recv() == {"StartAudio": {"text": "How are you?"}}
        await gate.until_reached()
        await d.command("StartChat")  # the user talks over the answer
        await d.command("Text", input="second")
        events = await d.until()
        await d.close()
        return first, events

    first, events = run(main())
    assert [t for t, _ in segments(first)] == ["Hello there."]
    # nothing more of the first answer: the new turn follows at once
    assert [name(e) for e in events[:2]] == ["EndVad", "ASR"]
    assert events[1] == {"ASR": {"text": "second"}}
    assert [t for t, _ in segments(events)] == ["Done."]
    assert "How are you?" in f.speaker.cancelled  # its synthesis was stopped
    gate.open()


# --------------------------------------------------------------------------------------------
# Input modes
# --------------------------------------------------------------------------------------------


def test_default_segmenter_is_the_spec_grouping(serve, tmp_path):
    """Without an installed segmenter the server groups the reply as docs/protocol.md#segments says
    (the splitter's own rules are tested in tests/test_splitter.py)."""
    from echokit_fast.conversation.splitter import split_segments

    script = [
        "Sure. ",
        "Paris is the capital of France. It has about two million ",
        "people. The Seine runs through it. Anything else?",
    ]
    app, _f = build(tmp_path, script=lambda t: script, segmenter=None)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "grp", opus=True)
        await d.command("Text", input="tell me about Paris")
        events = await d.until()
        await d.close()
        return events

    got = [t for t, _ in segments(run(main()))]
    assert got == split_segments(script)
    assert got[0] == "Sure."  # the first sentence leaves alone
    assert len(got) < 5  # later sentences are grouped, not one segment each


def test_text_input_and_ignored_commands(serve, tmp_path):
    script = [
        "Let me check. ",
        SpeakNow("One moment please."),
        "It is sunny",
        " today.",
    ]
    app, _f = build(tmp_path, script=lambda t: script)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "txt", opus=True)
        await d.ws.send("not json")
        await d.ws.send(json.dumps({"event": "Select", "index": 0}))
        await d.ws.send(json.dumps({"event": "StartRecord"}))
        await d.ws.send(json.dumps({"event": "Nope"}))
        await d.command("Text", input="weather?")
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    assert events[0] == {"ASR": {"text": "weather?"}}  # echo; no EndVad outside listening
    assert "EndVad" not in [name(e) for e in events]
    assert [t for t, _ in segments(events)] == [
        "Let me check.",
        "One moment please.",  # SpeakNow: its own segment, in order
        "It is sunny today.",
    ]
    assert [name(e) for e in events[-2:]] == ["EndAudio", "EndResponse"]
    assert all(name(e) == "AudioChunk" for _, audio in segments(events) for e in audio)


def test_submit_mode_without_stream_asr(serve, tmp_path):
    app, f = build(tmp_path)
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "web")
        await d.command("StartChat")
        await d.audio(SPEECH, frame=len(SPEECH))  # the web page: one frame per utterance
        await d.command("Submit")
        events = await d.until()
        await d.command("StartChat")
        await d.audio(SILENCE)
        await d.command("Submit")
        quiet = await d.until()
        await d.close()
        return events, quiet

    events, quiet = run(main())
    names = [name(e) for e in events]
    assert names[0] == "ASR" and "EndVad" not in names and names[-1] == "EndResponse"
    assert len(f.transcriber.calls) == 1  # the silence was never transcribed
    np.testing.assert_array_equal(f.transcriber.calls[0], pcm16_to_float(SPEECH))
    assert events[0]["ASR"]["text"] == f"heard {len(SPEECH) // 2}"
    assert quiet == ["EndResponse"]  # no speech: EndResponse only


def test_odd_sized_frames_stay_aligned(serve, tmp_path):
    app, f = build(tmp_path)
    addr = serve(app)
    sizes = [16383, 1, 7777, 3, 16384, 5, 1001]

    async def main():
        d = await Device.open(addr, "odd")
        pos, i = 0, 0
        while pos < len(SPEECH):
            n = sizes[i % len(sizes)]
            await d.ws.send(SPEECH[pos : pos + n])
            pos += n
            i += 1
        await d.command("Submit")
        events = await d.until()
        await d.close()
        return events

    events = run(main())
    assert name(events[0]) == "ASR"
    np.testing.assert_array_equal(f.transcriber.calls[0], pcm16_to_float(SPEECH))


def test_submit_while_stream_listening_ends_the_utterance(serve, tmp_path):
    app, _f = build(tmp_path)
    addr = serve(app)
    part = SPEECH[: 2 * 48000]  # 3 s, the user still talking

    async def main():
        d = await Device.open(addr, "sub", opus=True, stream_asr=True)
        await d.command("StartChat")
        await d.audio(part)
        await d.command("Submit")
        events = await d.until()
        await d.command("StartChat")
        await d.command("Text", input="still there?")
        more = await d.until()
        await d.close()
        return events, more

    events, more = run(main())
    assert [name(e) for e in events[:2]] == ["EndVad", "ASR"]
    assert events[1]["ASR"]["text"] == f"heard {len(part) // 2}"  # the whole buffer
    assert [t for t, _ in segments(events)] == ["Hello there.", "How are you?", "Fine."]
    # docs/compatibility.md#listening-and-turns: the session goes on
    assert [name(e) for e in more[:2]] == ["EndVad", "ASR"] and name(more[-1]) == "EndResponse"


def test_tts_parallel_per_session_delivered_in_order(serve, tmp_path):
    texts = [f"Sentence number {i}." for i in range(1, 6)]
    gates = {t: Gate() for t in texts}
    speaker = FakeSpeaker(gates=gates)

    def script(text: str) -> list[Any]:
        return [" ".join(texts)] if text == "go" else ["Bee."]

    app, f = build(tmp_path, speaker=speaker, script=script, settings=Settings(tts_parallel=3))
    addr = serve(app)

    async def main():
        a = await Device.open(addr, "A", opus=True)
        await a.command("Text", input="go")
        assert await a.recv() == {"ASR": {"text": "go"}}
        for t in texts[:3]:
            await gates[t].until_reached()
        assert f.speaker.started == texts[:3]  # three at once, the rest waits
        # another device is not held up by A's answer (no global TTS queue,
        # docs/compatibility.md#sessions-and-the-tts-queue)
        b = await Device.open(addr, "B", opus=True)
        await b.command("Text", input="b")
        b_events = await b.until()
        await b.close()
        # A's segments finish synthesis out of order ...
        for t in reversed(texts):
            gates[t].open()
        events = await a.until()
        await a.close()
        return b_events, events

    b_events, events = run(main())
    assert [t for t, _ in segments(b_events)] == ["Bee."]
    assert [t for t, _ in segments(events)] == texts  # ... and are delivered in order
    # A never had more than 3 segments in synthesis (B's "Bee." ran beside them)
    assert max(len([t for t in snap if t in texts]) for snap in f.speaker.snapshots) == 3
    assert any("Bee." in snap and len(snap) == 4 for snap in f.speaker.snapshots)


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["asr", "llm", "tts"])
def test_backend_failure_notice_then_sessions_go_on(serve, tmp_path, stage):
    def script(text: str) -> list[Any]:
        if text == "again":
            return ["All good."]
        if stage == "llm":
            return ["First sentence. ", llm_error()]
        return ["First sentence. Second sentence. Third sentence."]

    transcriber = FakeTranscriber(fail=stage == "asr")
    speaker = FakeSpeaker(fail_on="Second" if stage == "tts" else None)
    app, f = build(tmp_path, transcriber=transcriber, speaker=speaker, script=script)
    addr = serve(app)
    notice = {
        "asr": FakeTranscriber.NOTICE,
        "llm": FakeConversation.NOTICE,
        "tts": FakeSpeaker.NOTICE,
    }[stage]

    async def main():
        d = await Device.open(addr, "dev", opus=True, vowel=True, stream_asr=True)
        await d.command("StartChat")
        if stage == "asr":
            await d.audio(SPEECH + SILENCE)
        else:
            await d.command("Text", input="hello")
        events = await d.until()
        # the same session answers the next turn ...
        await d.command("StartChat")
        await d.command("Text", input="again")
        again = await d.until()
        await d.close()
        # ... and so does another device
        other = await Device.open(addr, "other", opus=True)
        await other.command("Text", input="again")
        other_events = await other.until()
        await other.close()
        return events, again, other_events

    events, again, other_events = run(main())
    names = [name(e) for e in events]
    assert names[0] == "EndVad" and names[-1] == "EndResponse"
    assert names.count("EndResponse") == 1
    i = names.index("DisplayText")
    assert events[i] == {"DisplayText": {"text": notice}}
    segs = segments(events[i + 1 : -1])
    assert len(segs) == 1 and segs[0][0] == notice  # shown by the firmware (StartAudio)
    spoken = decode_segment(segs[0][1])
    if stage == "tts":
        assert len(spoken) == 0  # the speaker is what failed: shown, not spoken
    else:
        n = len(f.speaker.produced[notice])
        assert len(spoken) == -(-n // 1920) * 1920
    before = segments(events[:i])
    if stage == "asr":
        assert before == []
    elif stage == "llm":
        assert [t for t, _ in before] == ["First sentence."]  # what was made is spoken
    else:
        # the third segment (synthesised in parallel) is dropped
        assert [t for t, _ in before] == ["First sentence.", "Second sentence."]
        # the failed segment ends with the audio it got (one 700-sample chunk, padded)
        assert len(decode_segment(before[1][1])) == 1920
    for evs in (again, other_events):
        assert [t for t, _ in segments(evs)] == ["All good."]
        assert name(evs[-1]) == "EndResponse"


def test_llm_hangs_then_device_disconnects_no_leaks(serve, tmp_path):
    hang = Gate()  # never opened

    def script(text: str) -> list[Any]:
        return ["Thinking", hang] if text == "hang" else ["Ok."]

    app, f = build(tmp_path, script=script, settings=Settings(session_ttl=0.0))
    addr = serve(app)

    async def baseline() -> set[asyncio.Task]:
        me = asyncio.current_task()
        return {t for t in asyncio.all_tasks() if t is not me}

    async def settle(expected: int) -> int:
        ok = await f.manager.wait_until(lambda m: not m.sessions, 20)
        assert ok, f"sessions left: {list(f.manager.sessions)}"
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:  # uvicorn's connection tasks end shortly after the handler returns
            n = len([t for t in asyncio.all_tasks() if t is not me])
            if n <= expected or loop.time() > deadline:
                return n
            await asyncio.sleep(0.02)

    async def main():
        warm = await Device.open(addr, "warmup", opus=True)
        await warm.command("Text", input="ok")
        await warm.until()
        await warm.close()
        assert await on_server(f, lambda: settle(10**6)) >= 0
        base = await on_server(f, baseline)
        # a turn that hangs in the LLM; the device goes away
        d = await Device.open(addr, "hanger", opus=True, vowel=True, stream_asr=True)
        await d.command("Text", input="hang")
        assert await d.recv() == {"ASR": {"text": "hang"}}
        await hang.until_reached()
        conv = f.convs.of("hanger")
        # meanwhile: a voice turn on another device, and a pre-empted connection
        other = await Device.open(addr, "other", opus=True, vowel=True, stream_asr=True)
        await other.command("StartChat")
        await other.audio(SPEECH + SILENCE)
        other_events = await other.until()
        p1 = await Device.open(addr, "pre", opus=True)
        p2 = await Device.open(addr, "pre", reconnect=True, opus=True)
        assert await p1.recv() == "EndResponse"
        await d.close()
        assert await asyncio.to_thread(conv.cancelled.wait, 20)  # the LLM stream was cancelled
        await other.close()
        await p2.close()
        await p1.close()
        left = await on_server(f, lambda: settle(len(base)))
        names = await on_server(f, lambda: baseline())
        return other_events, left, base, names

    other_events, left, base, now = run(main())
    assert name(other_events[-1]) == "EndResponse"
    assert [t for t, _ in segments(other_events)] == ["Ok."]
    extra = {t.get_name() for t in now} - {t.get_name() for t in base}
    assert left <= len(base), f"tasks left behind: {sorted(extra)}"
    assert not f.manager.sessions  # idle sessions dropped after session_ttl


# --------------------------------------------------------------------------------------------
# Handshake
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ws/dev?opus=1",
        "/ws/dev?vowel=TRUE",
        "/ws/dev?stream_asr=",
        "/ws/dev?reconnect=true&reconnect=false",
        "/ws/dev?record=yes",
        "/v2/stable_ws/dev?opus=on",
        "/ws/bad%20id?record=true",
        "/v1/record/.hidden",
    ],
)
def test_bad_query_flags_or_ids_are_refused_before_upgrade(serve, tmp_path, path):
    app, _ = build(tmp_path)
    addr = serve(app)

    async def main():
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(f"ws://{addr}{path}")
        return err.value.response.status_code

    assert run(main()) == 400


def test_unknown_flags_ignored_and_no_permessage_deflate(serve, tmp_path):
    app, _ = build(tmp_path)
    addr = serve(app)

    async def main():
        # stable_ws has no record flag: record=yes is an unknown parameter there
        ws = await websockets.connect(
            f"ws://{addr}/v2/stable_ws/dev?opus=true&foo=bar&record=yes", compression="deflate"
        )
        offered = ws.request.headers.get("Sec-WebSocket-Extensions", "")
        accepted = ws.response.headers.get("Sec-WebSocket-Extensions")
        await ws.send(json.dumps({"event": "Text", "input": "hi"}))
        first = await asyncio.wait_for(ws.recv(), 20)
        await ws.close()
        return offered, accepted, first

    offered, accepted, first = run(main())
    assert "permessage-deflate" in offered
    assert accepted is None  # the firmware rejects compressed frames (docs/protocol.md#connecting)
    assert first == b"\x81\xa3ASR\x91\xa2hi"


# --------------------------------------------------------------------------------------------
# Record mode and downloads
# --------------------------------------------------------------------------------------------


class CallbackServer:
    """A stand-in for the record callback: collects POSTed JSON bodies."""

    def __init__(self) -> None:
        self.bodies: queue.Queue[tuple[str, dict]] = queue.Queue()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"])
                outer.bodies.put((self.path, json.loads(self.rfile.read(n))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def get(self, timeout: float = 20) -> tuple[str, dict]:
        return self.bodies.get(timeout=timeout)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def callback():
    cb = CallbackServer()
    yield cb
    cb.close()


def raw_get(addr: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (HTTP clients normalise dot segments)."""
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_record_mode_file_callback_downloads(serve, tmp_path, callback):
    config = default_config()
    config = config.model_copy(
        update={"record": config.record.model_copy(update={"callback_url": callback.url})}
    )
    app, _f = build(tmp_path, config=config)
    addr = serve(app)
    frames = [b"\x01\x02\x03", b"\x04" * 5, SPEECH[:20000], b"\x07"]
    payload = b"".join(frames)

    async def main():
        ws = await websockets.connect(f"ws://{addr}/v1/record/dev1")
        for fr in frames[:2]:
            await ws.send(fr)
        await ws.send(json.dumps({"event": "StartRecord"}))  # ignored
        for fr in frames[2:]:
            await ws.send(fr)
        # a clean Close frame: the callback is still made
        # (docs/compatibility.md#record-mode-and-downloads)
        await ws.close()
        first = await asyncio.to_thread(callback.get)
        ws = await websockets.connect(f"ws://{addr}/ws/dev2?record=true&opus=true")
        await ws.send(SPEECH[:3000])
        await ws.close()
        second = await asyncio.to_thread(callback.get)
        return first, second

    (path1, body1), (_, body2) = run(main())
    assert path1 == "/hook"
    assert body1["id"] == "dev1" and body2["id"] == "dev2"
    uri = body1["download_uri"]
    m = re.fullmatch(r"/downloads/download/dev1/(record_\d{8}_\d{6}[+-]\d{4}\.wav)", uri)
    assert m, uri
    file = tmp_path / "record" / "dev1" / m.group(1)
    data = file.read_bytes()
    n = len(payload) - 1  # the odd last byte has no partner
    assert data[44:] == payload[:n]
    riff, size = struct.unpack("<I", data[4:8])[0], struct.unpack("<I", data[40:44])[0]
    assert (riff, size) == (36 + n, n)  # patched with the real sizes on close
    assert data[8:16] == b"WAVEfmt " and struct.unpack("<HHI", data[20:28]) == (1, 1, 16000)

    with httpx.Client(base_url=f"http://{addr}") as client:
        r = client.get(uri)
        assert r.status_code == 200 and r.content == data
        r = client.get("/downloads/list/dev1")
        assert r.status_code == 200
        assert r.json() == [{"file_name": m.group(1), "download_url": uri}]
        r = client.get(body2["download_uri"])
        assert r.status_code == 200 and r.content[44:] == SPEECH[:3000]
        r = client.get("/downloads/list/nobody")
        assert r.status_code == 404 and r.json() == []
        r = client.get("/downloads/download/dev1/missing.wav")
        assert r.status_code == 404 and r.text == "Not found"


def test_record_idle_timeout_ends_with_callback(serve, tmp_path, callback):
    config = default_config()
    config = config.model_copy(
        update={"record": config.record.model_copy(update={"callback_url": callback.url})}
    )
    app, _f = build(tmp_path, config=config, record_idle_s=0.3)
    addr = serve(app)

    async def main():
        ws = await websockets.connect(f"ws://{addr}/v1/record/idle")
        await ws.send(b"\x00\x01" * 100)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 20)  # the server ends the idle recording
        return await asyncio.to_thread(callback.get)

    _, body = run(main())
    assert body["id"] == "idle"
    name_ = body["download_uri"].rsplit("/", 1)[1]
    data = (tmp_path / "record" / "idle" / name_).read_bytes()
    assert data[44:] == b"\x00\x01" * 100


def test_record_folder_unusable_is_http_500(serve, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    app, _ = build(tmp_path, record_dir=blocker)
    addr = serve(app)

    async def main():
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(f"ws://{addr}/v1/record/dev")
        return err.value.response.status_code

    assert run(main()) == 500


def test_download_paths_refuse_traversal(serve, tmp_path):
    app, _ = build(tmp_path)
    addr = serve(app)
    root = tmp_path / "record"
    (root / "dev1").mkdir(parents=True)
    (root / "dev1" / "ok.wav").write_bytes(b"RIFFdata")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (root / "dev1" / "link.wav").symlink_to(secret)
    (root / "escape").symlink_to(tmp_path)

    assert raw_get(addr, "/downloads/download/dev1/ok.wav") == (200, b"RIFFdata")
    for path in [
        "/downloads/download/dev1/..",
        "/downloads/download/../secret.txt",
        "/downloads/download/.hidden/ok.wav",
        "/downloads/list/..",
    ]:
        status, body = raw_get(addr, path)
        assert status in (400, 404), path
        assert b"secret" not in body
    for path in [
        "/downloads/download/dev1/%2e%2e%2fsecret.txt",
        "/downloads/download/dev1/..%2F..%2Fsecret.txt",
        "/downloads/download/dev1/link.wav",  # a symlink out of the record folder
        "/downloads/download/escape/secret.txt",
        "/downloads/list/escape",
    ]:
        status, body = raw_get(addr, path)
        assert status == 404, path
        assert b"secret" not in body
    assert raw_get(addr, "/downloads/download/dev1/..")[0] == 400


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _count(text: str, metric: str, labels: str) -> float:
    m = re.search(rf"^{metric}{{{labels}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_histograms_count_turns(serve, tmp_path):
    app, _ = build(tmp_path)
    addr = serve(app)
    with httpx.Client(base_url=f"http://{addr}") as client:
        before = client.get("/metrics").text

    async def main():
        d = await Device.open(addr, "metrics", opus=True)
        with TraceLines() as trace:
            await d.command("Text", input="hi")
            await d.until()
            await asyncio.to_thread(trace.get)  # the turn is fully recorded
        await d.close()

    run(main())
    with httpx.Client(base_url=f"http://{addr}") as client:
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = r.text
    for stage in ("llm_first", "tts_first", "first_frame", "last_frame"):
        key = "echokit_device_turn_stage_seconds_count"
        assert _count(after, key, f'stage="{stage}"') == _count(before, key, f'stage="{stage}"') + 1
    ok = 'outcome="ok"'
    assert _count(after, "echokit_device_turns_total", ok) == (
        _count(before, "echokit_device_turns_total", ok) + 1
    )

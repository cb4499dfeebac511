"""The TurnDetector seam: the VAD-round implementation through the interface, the streaming
recognizer's detector over a scripted stream, and the session taking its detectors from the
factory in its settings."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import pytest
from device_fakes import Device, FakeTranscriber, name
from test_device import build, run

from echokit_fast.backends.base import BackendError, Heard
from echokit_fast.backends.vad.silero import SileroVad
from echokit_fast.conversation.session import Settings
from echokit_fast.turn.asr_stream import AsrTurnDetector
from echokit_fast.turn.detector import (
    TranscribingDetector,
    TurnDetector,
    TurnDetectorFactory,
    TurnEvent,
)
from echokit_fast.turn.vad_rounds import VadParams, VadTurnDetector, VadTurnDetectors

DATA = Path(__file__).resolve().parent / "data"
FRAME = 16384  # the firmware's upload frame, in bytes
PREROLL = 4096  # the fixture's speech starts at ~8224: keep 256 ms before it, as the firmware
SPEECH_END = 70624 - PREROLL  # end of the fixture's speech (official timestamps), in samples


def _speech() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        return w.readframes(w.getnframes())[2 * PREROLL :]


def _detector(params: VadParams | None = None) -> TurnDetector:
    factory: TurnDetectorFactory = VadTurnDetectors(params)
    factory.prepare()
    return factory()


async def _feed_all(det: TurnDetector, pcm: bytes) -> list[tuple[int, TurnEvent, float, float]]:
    """Feed ``pcm`` in firmware frames; ``(frame index, event, t before, t after)`` per event."""
    out = []
    for i in range(0, len(pcm), FRAME):
        before = time.monotonic()
        events = await det.feed(pcm[i : i + FRAME])
        after = time.monotonic()
        out += [(i // FRAME, e, before, after) for e in events]
    return out


def test_vad_detector_pause_then_end_on_real_speech():
    pcm = _speech() + bytes(2 * 16000)
    det = _detector()
    assert not det.speech_seen and det.speech_end is None
    events = asyncio.run(_feed_all(det, pcm))
    kinds = [e for _, e, _, _ in events]
    # "speech may be ending" at each quiet stretch (dips between words too), then the pause
    # and the end
    assert kinds[0] is TurnEvent.QUIET
    assert [k for k in kinds if k is not TurnEvent.QUIET][:2] == [TurnEvent.PAUSE, TurnEvent.END]
    assert det.speech_seen
    events = [e for e in events if e[1] is not TurnEvent.QUIET]
    (pause_frame, _, p_before, p_after), (end_frame, _, _, _) = events[0], events[1]
    # the pause is found in the frame holding the end of speech (or the next one)
    assert pause_frame in (2 * SPEECH_END // FRAME, 2 * SPEECH_END // FRAME + 1)
    assert end_frame >= pause_frame
    # speech ended in the pause's frame: speech_end is when that frame arrived
    assert det.speech_end is not None
    assert p_before <= det.speech_end <= p_after


def test_vad_detector_silence_only_ends_the_turn_without_speech():
    det = _detector()
    events = asyncio.run(_feed_all(det, bytes(2 * 16000)))
    assert events[0][1] is TurnEvent.END  # > 500 ms of silence
    assert not det.speech_seen and det.speech_end is None


def test_vad_detector_waiting_for_speech_is_not_ended_by_silence():
    factory = VadTurnDetectors()
    factory.prepare()
    det = factory(wait_for_speech=True)
    assert asyncio.run(_feed_all(det, bytes(2 * 3 * 16000))) == []  # 3 s: the turn waits
    assert not det.speech_seen
    events = asyncio.run(_feed_all(det, _speech() + bytes(2 * 16000)))
    kinds = [e for _, e, _, _ in events if e is not TurnEvent.QUIET]
    assert kinds[:2] == [TurnEvent.PAUSE, TurnEvent.END]


def test_vad_detector_params_change_the_rounds():
    # a minimum speech longer than the fixture's speech: no pause, only the end of the turn
    det = _detector(VadParams(min_speech_duration_ms=60_000))
    events = asyncio.run(_feed_all(det, _speech() + bytes(2 * 16000)))
    kinds = [e for _, e, _, _ in events]
    assert TurnEvent.PAUSE not in kinds and kinds[0] is TurnEvent.END
    assert det.speech_seen


def test_vad_detectors_need_prepare_and_are_independent():
    factory = VadTurnDetectors(model=SileroVad)
    with pytest.raises(RuntimeError, match="prepare"):
        factory()
    factory.prepare()
    a, b = factory(), factory()
    assert isinstance(a, VadTurnDetector) and a is not b
    asyncio.run(_feed_all(a, _speech()))
    assert a.speech_seen and not b.speech_seen


class ScriptedDetector:
    """Pauses and ends the turn at the n-th piece of audio; counts what it was fed."""

    def __init__(self, owner: ScriptedDetectors) -> None:
        self.owner = owner
        self.fed = 0
        self.speech_seen = False
        self.speech_end: float | None = None

    async def feed(self, pcm16: bytes) -> list[TurnEvent]:
        self.fed += 1
        self.speech_seen = True
        if self.fed == self.owner.end_at:
            self.speech_end = time.monotonic()
            return [TurnEvent.PAUSE, TurnEvent.END]
        return []


class ScriptedDetectors:
    def __init__(self, end_at: int) -> None:
        self.end_at = end_at
        self.prepared = 0
        self.made: list[ScriptedDetector] = []

    def prepare(self) -> None:
        self.prepared += 1

    def __call__(self, *, wait_for_speech: bool = False) -> ScriptedDetector:
        d = ScriptedDetector(self)
        self.made.append(d)
        return d


def test_session_takes_its_detectors_from_the_settings_factory(serve, tmp_path):
    detectors = ScriptedDetectors(end_at=3)
    app, f = build(
        tmp_path,
        transcriber=FakeTranscriber(text="scripted"),
        settings=Settings(turn_detector=detectors),
    )
    addr = serve(app)

    async def main():
        d = await Device.open(addr, "scripted", stream_asr=True)
        await d.command("StartChat")
        await d.audio(bytes(5 * FRAME))  # silence: only the scripted detector ends the turn
        first = await d.until()
        await d.command("StartChat")
        await d.audio(bytes(3 * FRAME))
        second = await d.until()
        await d.close()
        return first, second

    first, second = run(main())
    for events in (first, second):
        assert [name(e) for e in events[:2]] == ["EndVad", "ASR"]
        assert events[1] == {"ASR": {"text": "scripted"}}
    assert detectors.prepared == 1  # once, before the first detector
    assert len(detectors.made) == 2  # one per utterance
    assert [d.fed for d in detectors.made] == [3, 3]  # nothing fed after the end of the turn
    # the transcript covers the audio up to the frame that ended the turn
    assert [len(a) for a in f.transcriber.calls] == [3 * FRAME // 2, 3 * FRAME // 2]


# --- the streaming recognizer's detector (echokit_fast.turn.asr_stream) ------------------------


class ScriptedStream:
    """An AsrStream whose results the test pushes; records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.results: asyncio.Queue[Heard | None] = asyncio.Queue()
        self.finished = self.closed = False

    def send(self, pcm16: bytes) -> None:
        self.sent.append(pcm16)

    def finish(self) -> None:
        self.finished = True

    async def result(self) -> Heard | None:
        return await self.results.get()

    def close(self) -> None:
        self.closed = True


class FailingStream(ScriptedStream):
    async def result(self) -> Heard | None:
        raise BackendError("gone", notice="The speech recognizer is not reachable.")


def test_asr_detector_interims_end_at_the_first_sentence_with_text():
    async def main():
        stream = ScriptedStream()
        det = AsrTurnDetector(stream)
        assert isinstance(det, TranscribingDetector)
        pieces = [bytes(FRAME), bytes(FRAME), bytes(FRAME)]
        arrivals = []
        for p in pieces:
            before = time.monotonic()
            assert await det.feed(p) == []
            arrivals.append((before, time.monotonic()))
        for heard in [
            Heard("", final=True),  # an empty sentence (noise) does not end the turn
            Heard("hi"),
            Heard("hi"),  # unchanged: no event
            Heard("hi there", final=True, end_s=0.6),  # 19 200 bytes: in the second piece
            Heard("hi there, and more", final=True),
            None,
        ]:
            stream.results.put_nowait(heard)
        events = []
        async for event in det.events():
            events.append((event, det.interim))
        assert events == [(TurnEvent.INTERIM, "hi"), (TurnEvent.END, "hi")]
        assert det.speech_seen and stream.sent == pieces
        assert arrivals[1][0] <= det.speech_end <= arrivals[1][1]
        assert not stream.finished
        assert await det.transcript() == "hi there, and more"  # what came after the end too
        assert stream.finished and stream.closed

    asyncio.run(main())


def test_asr_detector_ends_the_turn_after_quiet_audio_and_reports_failures():
    async def main():
        stream = ScriptedStream()
        det = AsrTurnDetector(stream, quiet_s=1.0)
        assert await det.feed(bytes(16000)) == []
        stream.results.put_nowait(Heard("x"))
        assert [e async for e in _first(det.events())] == [TurnEvent.INTERIM]
        assert await det.feed(bytes(16000)) == []  # the text reset the count
        assert await det.feed(bytes(16000)) == [TurnEvent.END]  # 1 s since the last text
        assert det.speech_end is None
        waiting = AsrTurnDetector(ScriptedStream(), quiet_s=1.0, wait_for_speech=True)
        assert await waiting.feed(bytes(5 * 32000)) == []  # no text yet: no end either
        failing = FailingStream()
        bad = AsrTurnDetector(failing)
        assert [e async for e in bad.events()] == [TurnEvent.END]
        with pytest.raises(BackendError, match="gone"):
            await bad.transcript()
        assert failing.closed and not failing.finished

    asyncio.run(main())


async def _first(events):
    async for e in events:
        yield e
        return

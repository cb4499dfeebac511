"""The embedded TTS engine (echokit_fast.backends.tts.local.engine) with real hibari synthesis."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echokit_fast.audio import resample
from echokit_fast.backends.base import BackendBusy, BackendError, Speaker
from echokit_fast.backends.tts.local import LocalTTS
from echokit_fast.backends.tts.local import engine as tts

FOX = "The quick brown fox jumps over the lazy dog."
# Four pieces; the gated engine below holds every piece starting with "Then".
GATED_TEXT = "First we say hello. Then the second one. Then the third one. Then the last."


class GatedHibari(tts.HibariSpeaker):
    """Real hibari, but a piece starting with "Then" waits until `gate` opens, so a
    test can observe what happened before the later pieces were synthesised."""

    def __init__(self, **kwargs):
        self.gate = threading.Event()
        self.held = threading.Event()  # set when a held piece has started
        self.started: list[str] = []
        super().__init__(**kwargs)

    def _render(self, model, piece, speed, rng):
        if piece.startswith("Then"):
            self.started.append(piece)
            self.held.set()
            assert self.gate.wait(30), "the gate was never opened"
        return super()._render(model, piece, speed, rng)


@pytest.fixture(scope="module")
def engine() -> tts.HibariSpeaker:
    e = tts.HibariSpeaker()
    yield e
    e.close()


@pytest.fixture(scope="module")
def gated_module() -> GatedHibari:
    e = GatedHibari(max_streams=1, queue_s=0)  # a device request past it is refused at once
    yield e
    e.gate.set()
    e.close()


@pytest.fixture
def gated(gated_module: GatedHibari) -> GatedHibari:
    gated_module.gate.clear()
    gated_module.held.clear()
    gated_module.started.clear()
    yield gated_module
    gated_module.gate.set()
    asyncio.run(gated_module.drain())
    assert gated_module.active_streams == 0


async def collect(speaker, text, **kw) -> list[np.ndarray]:
    return [chunk async for chunk in speaker.speak(text, **kw)]


def band_energy(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


# --- text splitting ------------------------------------------------------------------


def test_split_pieces_sentences_titles_numbers():
    text = "Hello there. Dr. Smith paid 1.50 dollars! Really?\nA new line; and J. Doe came."
    assert tts.split_pieces(text) == [
        "Hello there.",
        "Dr. Smith paid 1.50 dollars!",
        "Really?",
        "A new line; and J. Doe came.",
    ]
    assert tts.split_pieces("  \n\t ") == []


def test_split_pieces_cuts_long_sentences_at_clauses_then_words():
    clauses = ", ".join(f"clause number {i} goes here" for i in range(20))  # 100 words
    pieces = tts.split_pieces(clauses + ".", max_words=12)
    assert all(len(p.split()) <= 12 for p in pieces)
    assert all(p.endswith((",", ".")) for p in pieces)  # cut after clause punctuation
    run_on = " ".join(["word"] * 95)
    assert [len(p.split()) for p in tts.split_pieces(run_on, max_words=40)] == [40, 40, 15]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["Hi.", "Dr.", "1.5", "yes,", "no;", "Why?", "a", "B.", "x!", "\n", "—"]),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=12),
)
def test_split_pieces_keeps_every_word_in_order(words, max_words):
    text = " ".join(words)
    pieces = tts.split_pieces(text, max_words=max_words)
    assert " ".join(pieces).split() == text.split()
    assert all(p == p.strip() and p for p in pieces)
    assert all(len(p.split()) <= max_words for p in pieces)


# --- synthesis -------------------------------------------------------------------------


def test_is_a_speaker_and_lists_voices(engine):
    assert isinstance(engine, Speaker)
    assert engine.native_rate == 24000
    assert engine.voice == "heart"
    assert "heart" in engine.voices()
    with pytest.raises(tts.UnknownVoice, match=r"'nobody'.*available: .*heart"):
        engine.resolve_voice("nobody")
    with pytest.raises(tts.UnknownVoice):
        asyncio.run(collect(engine, FOX, voice="nobody"))


def test_speech_is_audible_and_lasts_plausibly(engine):
    audio = np.concatenate(asyncio.run(collect(engine, FOX, sample_rate=24000)))
    assert audio.dtype == np.float32
    seconds = len(audio) / 24000
    words = len(FOX.split())
    assert 0.15 * words < seconds < 0.8 * words
    rms = float(np.sqrt(np.mean(audio**2)))
    assert rms > 0.01
    assert float(np.abs(audio).max()) <= 1.0
    # Speech energy lies mostly in the voice band.
    total = band_energy(audio, 24000, 0, 12000)
    assert band_energy(audio, 24000, 80, 4000) > 0.6 * total


def test_stream_equals_whole_and_is_deterministic(engine):
    text = "One sentence. And another, somewhat longer sentence follows it."
    chunks = asyncio.run(collect(engine, text, sample_rate=24000))
    assert len(chunks) == 2  # one per piece
    whole = engine.synthesize(text)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    np.testing.assert_array_equal(engine.synthesize(text), whole)  # seed 0 -> same noise


@pytest.mark.parametrize("rate", [8000, 16000, 44000, 48000])
def test_rate_conversion_is_the_resampler_across_piece_boundaries(engine, rate):
    text = "Short one. Then a second sentence. And a third."
    native = engine.synthesize(text)
    chunks = asyncio.run(collect(engine, text, sample_rate=rate))
    assert len(chunks) == 3
    out = np.concatenate(chunks)
    # One streaming resampler over all pieces: exactly the one-shot conversion of
    # the whole utterance (seamless boundaries), and the right length.
    assert len(out) == round(len(native) * rate / 24000)
    np.testing.assert_array_equal(out, resample(native, 24000, rate))
    # Spectrum: the voice band keeps its energy; nothing appears above the source band.
    top = min(rate, 24000) / 2
    ref = band_energy(native, 24000, 80, 0.9 * top)
    got = band_energy(out, rate, 80, 0.9 * top) * (24000 / rate) ** 2
    assert got == pytest.approx(ref, rel=0.05)
    if rate > 24000:
        assert band_energy(out, rate, 12500, rate / 2) < 1e-4 * band_energy(out, rate, 0, 12000)


def test_speed(engine):
    normal = engine.synthesize(FOX)
    fast = engine.synthesize(FOX, speed=2.0)
    slow = engine.synthesize(FOX, speed=0.5)
    assert len(fast) < 0.75 * len(normal) < len(normal) < 0.75 * len(slow)
    with pytest.raises(ValueError, match="speed"):
        engine.synthesize(FOX, speed=5)


def test_bad_arguments_and_empty_text(engine):
    with pytest.raises(ValueError, match="sample_rate"):
        asyncio.run(collect(engine, FOX, sample_rate=96000))
    with pytest.raises(ValueError, match="sample_rate"):
        asyncio.run(collect(engine, FOX, sample_rate=16000.0))
    assert asyncio.run(collect(engine, "  \n ")) == []
    assert engine.active_streams == 0


# --- streaming, cancellation, admission ---------------------------------------------


def test_first_chunk_arrives_before_later_pieces_are_synthesised(gated):
    start = gated.rendered

    async def main():
        stream = gated.speak(GATED_TEXT, sample_rate=16000)
        first = await anext(stream)
        # Received while piece 2 is held in the worker and pieces 3-4 have not started.
        rendered_at_first = gated.rendered - start
        started_at_first = list(gated.started)
        gated.gate.set()
        return first, rendered_at_first, started_at_first, [c async for c in stream]

    first, rendered_at_first, started_at_first, rest = asyncio.run(main())
    assert len(first) > 0
    assert rendered_at_first == 1
    assert started_at_first in ([], ["Then the second one."])  # 3 and 4 not submitted
    assert len(rest) == 3
    assert gated.rendered - start == 4


def test_cancelling_the_consumer_stops_the_synthesis(gated):
    start = gated.rendered

    async def main():
        got_first = asyncio.Event()

        async def consume():
            async for _chunk in gated.speak(GATED_TEXT, sample_rate=16000):
                got_first.set()

        task = asyncio.create_task(consume())
        await got_first.wait()
        assert await asyncio.to_thread(gated.held.wait, 30)
        task.cancel()  # while it waits for piece 2, which the worker holds
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gated.active_streams == 0
        gated.gate.set()
        await gated.drain()  # everything submitted before this point has run

    asyncio.run(main())
    # Piece 2 was already running and finished; pieces 3 and 4 never ran.
    assert gated.rendered - start == 2
    assert gated.started == ["Then the second one."]


def test_closing_the_stream_stops_the_synthesis(gated):
    start = gated.rendered

    async def main():
        stream = gated.speak(GATED_TEXT, sample_rate=24000)
        await anext(stream)
        assert await asyncio.to_thread(gated.held.wait, 30)
        await stream.aclose()
        assert gated.active_streams == 0
        gated.gate.set()
        await gated.drain()

    asyncio.run(main())
    assert gated.rendered - start == 2


def test_busy_past_the_admission_limit(gated):
    async def main():
        held = gated.speak(GATED_TEXT, sample_rate=16000)
        await anext(held)  # admitted; the engine allows one stream
        with pytest.raises(BackendBusy) as info:
            await anext(gated.speak("Another request.", sample_rate=16000))
        assert "busy" in info.value.notice
        gated.gate.set()
        assert len([c async for c in held]) == 3
        assert len(await collect(gated, "Now it fits.")) == 1

    asyncio.run(main())


def test_concurrent_streams_interleave_piece_by_piece():
    order: list[str] = []

    class Recording(tts.HibariSpeaker):
        def _render(self, model, piece, speed, rng):
            order.append(piece)
            return super()._render(model, piece, speed, rng)

    engine = Recording()
    order.clear()

    async def main():
        long = " ".join(f"Long part {i}." for i in range(6))
        short = "Short part."
        return await asyncio.gather(collect(engine, long), collect(engine, short))

    try:
        long_chunks, short_chunks = asyncio.run(main())
    finally:
        engine.close()
    assert len(long_chunks) == 6 and len(short_chunks) == 1
    # The short request did not wait for the whole long one.
    assert order.index("Short part.") <= 2


# --- configuration and loading ---------------------------------------------------------


def test_from_config_maps_settings_and_logs_the_load_time(caplog):
    with caplog.at_level(logging.INFO, logger="echokit_fast.backends.tts.local.engine"):
        engine = tts.from_config(LocalTTS(voice="heart", speed=1.25))
    try:
        assert (engine.engine, engine.voice, engine.speed) == ("hibari", "heart", 1.25)
        assert any("voice 'heart' loaded in" in r.getMessage() for r in caplog.records)
    finally:
        engine.close()
    with pytest.raises(ValueError, match="unknown voice 'nobody' for the hibari engine"):
        LocalTTS(voice="nobody")  # refused as the config loads, before any engine
    with pytest.raises(ValueError, match="unknown TTS engine 'espeak'"):
        tts.create("espeak")


def test_piper_missing_is_a_clear_backend_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "piper", None)  # as if not installed
    with pytest.raises(BackendError, match=r"pip install 'echokit-fast\[piper\]'"):
        tts.from_config(LocalTTS(engine="piper"))

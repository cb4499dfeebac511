"""Embedded Whisper ASR latency: our engine vs faster-whisper called directly; speculative start.

Same run, same model object (Whisper base from the installed model package, CPU int8 or
CUDA as ``device = "auto"`` picks), same ~3 s clip (espeak-ng speech, 16 kHz), same decoding
options (greedy, language detected, no timestamps, no VAD filter):

* group ``asr-3s-clip``: ``ours`` awaits ``LocalWhisper.transcribe`` (queue, worker thread,
  asyncio hand-off) vs ``peer_faster_whisper``: ``WhisperModel.transcribe`` + joining the
  segments, in the calling thread. The ratio ours/peer is the engine's overhead (target <= 1.05).
* group ``asr-3s-clip-interleaved``: the same two calls alternated within each round (robust
  to load from other processes on a shared machine); prints the ratio of medians (``-s``).
* group ``asr-one-pass``: language not given, the engine's model (``OnePassWhisper``: one
  encode serves language detection and decoding) vs faster-whisper's own ``WhisperModel`` on
  the same weights (encodes twice), alternated on the fox clip and espeak-ng German and
  French; prints the ratio of medians one-pass/two-pass per clip (``-s``). The peer of the
  two groups above is the engine's model, so their ratio is the engine's overhead alone.
* group ``asr-window``: the engine with the encoder window sized to the clip (the default,
  ``encoder_window = "auto"``) vs the full 30 s window (``"full"``), alternated on clips of
  1 to 6 s (espeak-ng, language detected); prints the ratio of medians sized/full per clip
  (``-s``). Its quality gate is tests/test_asr_window.py.
* group ``asr-end-of-turn``: what the device server sees from the end of speech to the final
  transcript when the turn ends after the end-of-turn silence (``hangover_ms``, 500 ms by
  default). ``without_speculation``: wait out the silence, then transcribe. ``with_speculation``:
  ``start()`` the job when the VAD first hears silence, wait out the silence, then await the
  result. Latency saved = the difference of the two means (at most the silence wait).

Timed run:

    .venv/bin/python -m pytest benches/bench_asr.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # the model comes from the installed package

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from asr_helpers import espeak_wav, plain_faster_whisper, wav_mono

from echokit_fast import audio
from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.asr.local import engine as asr
from echokit_fast.backends.schema import VadConfig

# Depends on what Whisper hears: re-run under each forced CPU ISA by scripts/test.sh.
pytestmark = pytest.mark.asr_quality

SENTENCE = "The quick brown fox jumps over the lazy dog."
HANGOVER_S = VadConfig().hangover_ms / 1000
ROUNDS = 3


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> asr.LocalWhisper:
    """The engine on faster-whisper's full 30 s window, as its peers decode (group
    ``asr-window`` times the sized window against it)."""
    return asr.LocalWhisper.from_config(
        LocalASR(encoder_window="full"), cache_dir=tmp_path_factory.getbasetemp() / "asr-models"
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = tmp_path_factory.mktemp("bench-asr") / "fox.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), SENTENCE], check=True, timeout=30)
    samples, rate = audio.read_wav(path.read_bytes())
    pcm = audio.resample(
        audio.to_mono(np.ascontiguousarray(samples), samples.shape[1]), rate, 16000
    )
    assert 2.5 <= len(pcm) / 16000 <= 3.5
    return pcm


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _sane(text: str) -> None:
    assert "fox" in text.lower() and "lazy dog" in text.lower(), text


def _peer(model, pcm: np.ndarray) -> str:
    segments, _ = model.transcribe(pcm, beam_size=1, without_timestamps=True, vad_filter=False)
    return "".join(s.text for s in segments).strip()


def test_ours(benchmark, engine, clip, loop) -> None:
    benchmark.group = "asr-3s-clip"
    if not benchmark.disabled:  # warm-up (the untimed CI run skips it)
        _sane(loop.run_until_complete(engine.transcribe(clip)))

    def run() -> str:
        return loop.run_until_complete(engine.transcribe(clip))

    _sane(benchmark.pedantic(run, rounds=ROUNDS, iterations=1))


def test_peer_faster_whisper(benchmark, engine, clip) -> None:
    benchmark.group = "asr-3s-clip"
    if not benchmark.disabled:  # warm-up (the untimed CI run skips it)
        _sane(_peer(engine.model, clip))
    text = benchmark.pedantic(_peer, args=(engine.model, clip), rounds=ROUNDS, iterations=1)
    _sane(text)


def test_interleaved_overhead(benchmark, engine, clip, loop) -> None:
    """Ours and the peer alternately, so load from other processes hits both alike; the
    ratio of medians lands in ``extra_info`` (``--benchmark-columns`` does not show it: see
    ``--benchmark-json``) and is printed with ``-s``."""
    benchmark.group = "asr-3s-clip-interleaved"
    ours: list[float] = []
    peer: list[float] = []

    def pair() -> str:
        t0 = time.perf_counter()
        a = loop.run_until_complete(engine.transcribe(clip))
        t1 = time.perf_counter()
        b = _peer(engine.model, clip)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        peer.append(t2 - t1)
        assert a == b  # same model, same options: the same words
        return a

    _sane(benchmark.pedantic(pair, rounds=1 if benchmark.disabled else 5, iterations=1))
    ratio = statistics.median(ours) / statistics.median(peer)
    benchmark.extra_info.update(ours_median_s=statistics.median(ours), ratio_ours_peer=ratio)
    print(f"\nASR overhead, interleaved: ours/peer = {ratio:.3f} ({len(ours)} pairs)")
    assert ratio > 0


def _alternate(
    benchmark,
    clips: dict[str, np.ndarray],
    first: tuple[str, Callable[[np.ndarray], str]],
    second: tuple[str, Callable[[np.ndarray], str]],
    check: Callable[[str, str, str], None],
) -> None:
    """Time two transcriptions of each clip, alternated within each round (load from other
    processes hits both alike): 5 rounds after a warm-up (1 untimed in the suite);
    ``check(clip, text1, text2)`` each time. Prints and records the ratio of medians."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in clips}

    def round_() -> None:
        for name, pcm in clips.items():
            t0 = time.perf_counter()
            a = first[1](pcm)
            t1 = time.perf_counter()
            b = second[1](pcm)
            t2 = time.perf_counter()
            times[name][0].append(t1 - t0)
            times[name][1].append(t2 - t1)
            check(name, a, b)

    if not benchmark.disabled:
        round_()  # warm-up
        for one, two in times.values():
            one.clear()
            two.clear()
    benchmark.pedantic(round_, rounds=1 if benchmark.disabled else 5, iterations=1)
    print()
    for name, (one, two) in times.items():
        a, b = statistics.median(one), statistics.median(two)
        benchmark.extra_info[f"ratio_{first[0]}_{second[0]}_{name}"] = a / b
        print(
            f"ASR {name} {len(clips[name]) / 16000:.1f} s: {first[0]} {a:.3f} s, "
            f"{second[0]} {b:.3f} s, ratio {a / b:.3f} ({len(one)} pairs)"
        )
        assert a > 0 and b > 0


def test_one_pass_vs_two_pass(benchmark, engine, clip, tmp_path) -> None:
    """Language detection + decoding from one encode vs faster-whisper's two, alternated."""
    benchmark.group = "asr-one-pass"
    clips = {"en (fox)": clip}
    for voice, text in (
        ("de", "Guten Morgen, wie geht es dir heute?"),
        ("fr", "Bonjour, je voudrais un café, s'il vous plaît."),
    ):
        pcm, rate = wav_mono(espeak_wav(text, tmp_path / f"{voice}.wav", voice=voice))
        clips[voice] = audio.resample(pcm, rate, 16000)
    plain = plain_faster_whisper(engine.model)

    def check(name: str, one: str, two: str) -> None:
        assert one == two, name  # same window, same language: the same words

    _alternate(
        benchmark,
        clips,
        ("one-pass", lambda pcm: _peer(engine.model, pcm)),
        ("two-pass", lambda pcm: _peer(plain, pcm)),
        check,
    )


def test_sized_vs_full_window(benchmark, engine, clip, loop, tmp_path) -> None:
    """The encoder window sized to the clip vs the full window, alternated per clip."""
    benchmark.group = "asr-window"
    sized = asr.LocalWhisper(engine.model, model_id="sized", encoder_window="auto")
    clips = {"fox": clip}
    for name, text in (
        ("stop", "Stop."),
        ("long", "Add eggs, butter, flour and sugar to my list, and remind me tomorrow."),
    ):
        pcm, rate = wav_mono(espeak_wav(text, tmp_path / f"{name}.wav"))
        clips[name] = audio.resample(pcm, rate, 16000)

    def check(name: str, a: str, b: str) -> None:
        assert a and b, name
        if name == "fox":
            _sane(a)

    try:
        _alternate(
            benchmark,
            clips,
            ("sized", lambda pcm: loop.run_until_complete(sized.transcribe(pcm))),
            ("full", lambda pcm: loop.run_until_complete(engine.transcribe(pcm))),
            check,
        )
    finally:
        sized.close()


def test_without_speculation(benchmark, engine, clip, loop) -> None:
    benchmark.group = "asr-end-of-turn"

    async def turn() -> str:
        await asyncio.sleep(HANGOVER_S)  # the end-of-turn silence runs out
        return await engine.transcribe(clip)

    _sane(benchmark.pedantic(lambda: loop.run_until_complete(turn()), rounds=ROUNDS, iterations=1))


def test_with_speculation(benchmark, engine, clip, loop) -> None:
    benchmark.group = "asr-end-of-turn"

    async def turn() -> str:
        job = engine.start(clip)  # the VAD hears the first silence
        await asyncio.sleep(HANGOVER_S)  # no more speech before the silence runs out
        return await job.result()

    _sane(benchmark.pedantic(lambda: loop.run_until_complete(turn()), rounds=ROUNDS, iterations=1))


def test_speculation_cancelled_when_speech_resumes(benchmark, engine, clip, loop) -> None:
    """The other branch: speech resumes, the speculative job is cancelled and the longer
    audio transcribed; the engine is free again afterwards."""
    benchmark.group = "asr-speech-resumes"
    longer = np.concatenate([clip, clip])

    async def turn() -> str:
        job = engine.start(clip)
        await asyncio.sleep(0.1)  # more speech arrives
        job.cancel()
        return await engine.transcribe(longer)

    text = benchmark.pedantic(lambda: loop.run_until_complete(turn()), rounds=1, iterations=1)
    assert text.lower().count("lazy dog") == 2, text
    assert engine.pending == 0

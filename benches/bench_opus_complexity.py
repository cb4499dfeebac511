"""The downlink's Opus complexity: encoder CPU against what the listener gets back.

libopus' default complexity (9) spends about half of a turn's server CPU on encoding the reply.
For each complexity this suite encodes replies spoken by the embedded TTS as the devices get
them (EchoKit: 16 kHz, 120 ms frames; xiaozhi: 24 kHz, 60 ms frames), decodes them as the
firmware does, and measures:

* **encode time** per second of audio (median of runs, one thread);
* **WER**: our Whisper on the decoded audio against the text spoken (what a listener
  understands, as well as a machine can tell);
* **log-spectral distance** (dB, 20 ms frames, 40 Hz to 7.5 kHz) between the decoded audio and
  the source: how far the sound is from the original, beyond intelligibility.

:data:`echokit_fast.audio.DOWNLINK_OPUS_COMPLEXITY` is the lowest complexity whose WER is no
worse than the default's and whose spectral distance is within :data:`MAX_DISTANCE_DB` of it;
the test fails if that stops being true. Full table:

    .venv/bin/python -m pytest benches/bench_opus_complexity.py -s --opus-all
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from asr_helpers import wer

from echokit_fast import audio
from echokit_fast.audio import DOWNLINK_OPUS_COMPLEXITY, OpusDecoder, OpusEncoder
from echokit_fast.backends.tts.local import engine as tts

# Depends on what Whisper hears: re-run under each forced CPU ISA by scripts/test.sh.
pytestmark = pytest.mark.asr_quality

TEXTS = [
    "The capital of France is Paris. It is famous for the Eiffel Tower and its museums.",
    "Set a timer for ten minutes, and remind me to take the bread out of the oven.",
    "Tomorrow will be cloudy in the morning, with some rain in the afternoon.",
]
DEFAULT = 9  # libopus 1.5's
#: how much farther from the source than the default's the decoded audio may be: a quarter of
#: the ~1 dB log-spectral distance usually taken as the threshold of an audible difference
MAX_DISTANCE_DB = 0.25
#: the complexities of the full table (``--opus-all``; else ours and the default only)
LEVELS = (0, 1, 2, 3, 4, 6, 9)
#: (rate, frame ms): the EchoKit and the xiaozhi downlinks
LINKS = ((16000, 120.0), (24000, 60.0))


@pytest.fixture(scope="module")
def replies() -> dict[int, list[np.ndarray]]:
    speaker = tts.from_config(None)
    return {
        rate: [np.asarray(speaker.synthesize(t, sample_rate=rate), np.float32) for t in TEXTS]
        for rate, _ in LINKS
    }


def round_trip(
    x: np.ndarray, rate: int, frame_ms: float, complexity: int
) -> tuple[np.ndarray, float]:
    """(decoded audio, encode seconds)."""
    enc = OpusEncoder(rate, frame_ms, complexity)
    t0 = time.perf_counter()
    packets = enc.push(x) + enc.flush()
    spent = time.perf_counter() - t0
    dec = OpusDecoder(rate)
    return np.concatenate([dec.decode(p) for p in packets])[: len(x)], spent


def spectral_distance(ref: np.ndarray, out: np.ndarray, rate: int) -> float:
    """Mean log-spectral distance in dB over the voiced 20 ms frames (Hann, 40 Hz-7.5 kHz),
    after aligning ``out`` to ``ref`` (Opus' look-ahead delay)."""
    lag = int(np.argmax(np.correlate(out[:rate], ref[: rate // 2], mode="valid")))
    out = out[lag:]
    n = min(len(ref), len(out))
    size = rate // 50
    frames = n // size
    win = np.hanning(size)
    a = np.fft.rfft(ref[: frames * size].reshape(frames, size) * win, axis=1)
    b = np.fft.rfft(out[: frames * size].reshape(frames, size) * win, axis=1)
    freqs = np.fft.rfftfreq(size, 1 / rate)
    band = (freqs >= 40) & (freqs <= 7500)
    pa = 10 * np.log10(np.abs(a[:, band]) ** 2 + 1e-10)
    pb = 10 * np.log10(np.abs(b[:, band]) ** 2 + 1e-10)
    voiced = pa.max(axis=1) > pa.max() - 40
    return float(np.mean(np.sqrt(np.mean((pa - pb)[voiced] ** 2, axis=1))))


def test_the_downlink_complexity_keeps_the_quality(request, replies, whisper) -> None:
    everything = request.config.getoption("--opus-all")
    levels = sorted(set(LEVELS) | {DOWNLINK_OPUS_COMPLEXITY}) if everything else None
    rows = {}
    for rate, frame_ms in LINKS:
        for level in levels or (DOWNLINK_OPUS_COMPLEXITY, DEFAULT):
            seconds, errors, distances = [], [], []
            for text, x in zip(TEXTS, replies[rate], strict=True):
                decoded, spent = min(
                    (round_trip(x, rate, frame_ms, level) for _ in range(3)), key=lambda r: r[1]
                )
                seconds.append(spent / (len(x) / rate))
                heard = asyncio.run(
                    whisper.transcribe(audio.resample(decoded, rate, 16000), sample_rate=16000)
                )
                errors.append(wer(text, heard))
                distances.append(spectral_distance(x, decoded, rate))
            rows[rate, level] = (
                statistics.median(seconds),
                statistics.mean(errors),
                statistics.mean(distances),
            )
    print("\nrate  complexity  encode ms per s of audio  WER     spectral distance")
    for (rate, level), (cost, error, distance) in rows.items():
        mark = " <- ours" if level == DOWNLINK_OPUS_COMPLEXITY else ""
        print(
            f"{rate:5d}  {level:10d}  {cost * 1000:24.2f}  {error:6.1%}  {distance:6.2f} dB{mark}"
        )
    for rate, _ in LINKS:
        _, error, distance = rows[rate, DOWNLINK_OPUS_COMPLEXITY]
        _, base_error, base_distance = rows[rate, DEFAULT]
        assert error <= base_error + 1e-9, (rate, error, base_error)
        assert distance <= base_distance + MAX_DISTANCE_DB, (rate, distance, base_distance)

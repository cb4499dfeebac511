"""Turn-end accuracy: the fixed-silence rule vs Smart Turn v3.2, on synthesised utterances.

Each pair ``(head, tail)`` is said by three voices (espeak-ng ``en-us`` and ``en-gb``, the
embedded hibari TTS) two ways:

* **complete**: the whole sentence, then 4 s of silence. Reported: the mean *added wait*, from
  the audible end of the speech (the last 20 ms block above -40 dBFS) to the end of the turn.
* **paused**: ``"head, tail"`` said as one sentence (the comma keeps the voice's
  mid-sentence intonation), its longest silence inside the speech (the comma's) stretched to an
  800 ms pause, then silence. A *false end* is a turn ended before a whole VAD window of the tail
  was heard (inside the pause). (The head said on its own would end with a sentence-final fall.)

Audio is fed one VAD window (32 ms) at a time, so the waits are exact to the window, not the
device's 512 ms frame. The suite runs the first pair once (``scripts/test.sh``); the full set
(24 complete, 24 paused):

    .venv/bin/python -m pytest benches/bench_turn.py -s --turn-all
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from asr_helpers import espeak_wav, wav_mono

from echokit_fast import audio
from echokit_fast.backends.schema import VadConfig
from echokit_fast.backends.tts.local import engine as tts
from echokit_fast.turn.detector import TurnEvent
from echokit_fast.turn.smart_turn import SmartTurnDetectors

PAIRS = [
    ("What is the weather like in", "Paris today?"),
    ("I would like to order", "a large pizza."),
    ("Set a timer for", "ten minutes."),
    ("Can you remind me to call", "my sister tonight?"),
    ("Please turn on the lights in", "the kitchen."),
    ("How many people live in", "New York City?"),
    ("Play some music by", "the Beatles."),
    ("What time does the bank", "close on Fridays?"),
]
VOICES = ["en-us", "en-gb", "hibari"]
PAUSE_MS = 800
TAIL_MS = 4000
WINDOW = 512


def _say(text: str, voice: str, speaker: tts.LocalSpeaker, tmp: Path) -> np.ndarray:
    if voice == "hibari":
        return np.asarray(speaker.synthesize(text, sample_rate=16000), np.float32)
    x, rate = wav_mono(espeak_wav(text, tmp / "say.wav", voice=voice))
    return audio.resample(x, rate, 16000)


def _loud(x: np.ndarray, block: int) -> np.ndarray:
    """Indices of the ``block``-sample blocks above -40 dBFS."""
    n = len(x) // block
    rms = np.sqrt(np.mean(x[: n * block].reshape(n, block) ** 2, axis=1) + 1e-20)
    return np.flatnonzero(20 * np.log10(rms) > -40)


def _audible_end(x: np.ndarray) -> int:
    """Sample after the last 20 ms block above -40 dBFS."""
    loud = _loud(x, 320)
    return int((loud[-1] + 1) * 320) if len(loud) else 0


def _with_pause(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``x`` with its longest inner silence (10 ms blocks) made PAUSE_MS of zeros; and the
    sample where the speech resumes."""
    loud = _loud(x, 160)
    k = int(np.argmax(np.diff(loud)))
    start, end = (loud[k] + 1) * 160, loud[k + 1] * 160
    out = np.concatenate([x[:start], np.zeros(16 * PAUSE_MS, np.float32), x[end:]])
    return out, start + 16 * PAUSE_MS


def _end_sample(factory, x: np.ndarray) -> int | None:
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    det = factory(wait_for_speech=True)  # the silence before the first word never ends it

    async def run() -> int | None:
        for i in range(0, len(pcm), 2 * WINDOW):
            if TurnEvent.END in await det.feed(pcm[i : i + 2 * WINDOW]):
                return (i + 2 * WINDOW) // 2
        return None

    return asyncio.run(run())


def test_turn_end_accuracy(request, speaker, tmp_path: Path) -> None:
    full = request.config.getoption("--turn-all")
    pairs = PAIRS if full else PAIRS[:1]
    detectors = {
        "silence": SmartTurnDetectors.from_config(VadConfig()),
        "smart_turn": SmartTurnDetectors.from_config(VadConfig(turn_detector="smart_turn")),
    }
    for d in detectors.values():
        d.prepare()
    lead = np.zeros(16 * 300, np.float32)
    waits: dict[str, list[float]] = {k: [] for k in detectors}
    false_ends: dict[str, int] = dict.fromkeys(detectors, 0)
    n = 0
    for head, tail in pairs:
        for voice in VOICES:
            whole = _say(f"{head} {tail}", voice, speaker, tmp_path)
            complete = np.concatenate([lead, whole, np.zeros(16 * TAIL_MS, np.float32)])
            speech_end = len(lead) + _audible_end(whole)
            split, resumed = _with_pause(_say(f"{head}, {tail}", voice, speaker, tmp_path))
            paused = np.concatenate([lead, split, np.zeros(16 * TAIL_MS, np.float32)])
            resumed += len(lead)
            n += 1
            for name, factory in detectors.items():
                end = _end_sample(factory, complete)
                assert end is not None, f"{name} never ended {voice!r} {head} {tail}"
                waits[name].append((end - speech_end) / 16)
                end = _end_sample(factory, paused)
                # ended before a whole window of the tail was heard: decided in the pause
                false_ends[name] += end is not None and end < resumed + WINDOW
    print(f"\nturn-end accuracy, {n} complete + {n} paused ({PAUSE_MS} ms) utterances:")
    print("| detector | false ends (paused) | mean added wait (complete) | max wait |")
    print("|---|---|---|---|")
    for name in detectors:
        w = waits[name]
        print(
            f"| {name} | {false_ends[name]}/{n} ({false_ends[name] / n:.0%}) "
            f"| {np.mean(w):.0f} ms | {np.max(w):.0f} ms |"
        )
    # the fixed rule ends every paused utterance in its 800 ms pause (500 ms hangover)
    assert false_ends["silence"] == n
    # Smart Turn ends complete sentences at the first pause, sooner than 500 ms of silence
    assert np.mean(waits["smart_turn"]) < np.mean(waits["silence"])
    assert all(w < 3000 for w in waits["silence"])

"""Shared by the ASR tests: speech from espeak-ng, word error rate, a scriptable fake model."""

from __future__ import annotations

import copy
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echokit_fast import audio

# Sentences whose transcription by Whisper base (int8) is stable across CTranslate2's CPU
# kernels: each was transcribed word for word under CT2_FORCE_CPU_ISA = GENERIC, AVX, AVX2
# and AVX512. Sentences that flip between kernels ("The quick brown fox jumps over the lazy
# dog." became "... fox jump, so we're gonna lazy dog." under AVX2) are left out: a quality
# test must not depend on the CPU it lands on. scripts/test.sh re-runs the tests marked
# `asr_quality` under each forced ISA the CPU has, so a fragile sentence cannot come back.
SENTENCES = (
    "What is the weather like today?",
    "Play some music in the living room.",
    "What time is it in London right now?",
    "Hello, how are you doing this morning?",
    "How many people live in the United States?",
    "Tell me a story about a little red car.",
    "Thank you very much for your help.",
    "Where is the nearest train station?",
    "It is going to rain this afternoon.",
    "Remind me to buy milk and bread.",
)


def espeak_wav(text: str, path: Path, *, voice: str = "en-us", speed: int = 175) -> bytes:
    """Synthesize `text` with espeak-ng (22.05 kHz mono WAV); returns the file's bytes."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path.read_bytes()


def wav_mono(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = audio.read_wav(data)
    return audio.to_mono(np.ascontiguousarray(samples), samples.shape[1]), rate


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count): Levenshtein on words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            cur = min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
            prev, row[j] = row[j], cur
    return row[len(hyp)], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    errors, n = word_errors(reference, hypothesis)
    return errors / max(n, 1)


def plain_faster_whisper(model: Any) -> Any:
    """The loaded weights of `model` (the engine's ``OnePassWhisper``) behind faster-whisper's
    own ``WhisperModel``, unmodified: one encode to detect the language, another to decode.
    The reference the one-pass engine is tested and benched against; nothing is reloaded."""
    from faster_whisper import WhisperModel

    plain = copy.copy(model)
    plain.__class__ = WhisperModel
    return plain


@dataclass
class FakeSegment:
    text: str
    start: float = 0.0
    end: float = 1.0
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = -0.1
    compression_ratio: float = 1.0
    no_speech_prob: float = 0.01


@dataclass
class FakeInfo:
    language: str
    language_probability: float


@dataclass
class FakeModel:
    """Stands in for faster-whisper's WhisperModel where a test needs control of timing.

    With `gated`, each transcribe call announces itself on `entered` and then waits
    for `release` (set by the test) before producing its segments; `calls` records
    the kwargs and sample count of every call, `error` makes calls raise.
    """

    gated: bool = False
    text: str = "hello"
    segments: int = 1
    error: Exception | None = None
    detected: tuple[str, float, list[tuple[str, float]]] = ("en", 0.9, [("en", 0.9)])
    supported_languages: list[str] = field(default_factory=lambda: ["en", "de", "fr", "zh"])
    calls: list[dict[str, Any]] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    steps: int = 0

    def detect_language(self, pcm: np.ndarray) -> tuple[str, float, list[tuple[str, float]]]:
        return self.detected

    def transcribe(self, pcm: np.ndarray, **kwargs: Any) -> tuple[Any, FakeInfo]:
        self.calls.append({**kwargs, "samples": len(pcm), "peak": float(np.max(np.abs(pcm)))})
        if self.gated:
            self.entered.set()
            assert self.release.wait(30), "the test never released the fake model"
        if self.error is not None:
            raise self.error
        language = kwargs.get("language") or self.detected[0]

        def generate():
            for i in range(self.segments):
                self.steps += 1
                yield FakeSegment(f" {self.text}{i if self.segments > 1 else ''}", i, i + 1.0)

        return generate(), FakeInfo(language, 1.0)

"""Turn detection by VAD rounds: the first :class:`~echokit_fast.turn.detector.TurnDetector`
(docs/protocol.md#stream-mode, #turn-detection).

:class:`VadTurnDetector` runs the microphone stream through the embedded Silero VAD
(512-sample windows, 32 ms at 16 kHz) and the round logic below; :class:`VadTurnDetectors`
is its factory (the shared Silero model, loaded once, behind one
:class:`~echokit_fast.backends.vad.pool.VadPool`: the windows of every device that spoke meanwhile
run in one model call). The round logic itself is pure, no I/O:

* :class:`Hysteresis` -- the device server's own detector (docs/protocol.md#turn-detection):
  ``p > threshold`` starts speech and clears the silent-window count; ``p < neg_threshold`` counts a
  silent window and ``max_silence_duration_ms * 16 // 512`` of them end speech; anything in between
  changes nothing.
* :class:`RoundTracker` -- the rounds of docs/protocol.md#stream-mode: per window
  ``speech_ms``/``silence_ms``; the first quiet window (``p < neg_threshold``) after at least
  ``min_speech_duration_ms`` of speech is ``quiet`` (speech may be ending: the early ASR starts
  there, before the hysteresis has released); a non-speech window after at least
  ``min_speech_duration_ms`` of speech ends the round ("speech ended": a pause, the speculative
  ASR restarts on the grown buffer), more than ``hangover_ms`` of silence ends the turn -- once
  the user has spoken, with ``wait_for_speech`` (a device that streams its microphone before
  anyone speaks, the xiaozhi firmware's auto mode): the silence before the first speech window
  then never ends it.

Difference from the reference: after a round ends inside a frame, the rest of that frame is
still run through the VAD and counted in the next round (the reference skips it), so the end
of the turn is found up to one frame (512 ms) sooner and the model state sees every sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from echokit_fast.backends.vad.pool import PooledStream, VadPool
from echokit_fast.backends.vad.silero import SileroVad
from echokit_fast.turn.detector import TurnEvent

__all__ = ["Hysteresis", "RoundTracker", "VadParams", "VadTurnDetector", "VadTurnDetectors"]

WINDOW = 512  # samples per VAD window at 16 kHz
WINDOW_MS = 32


@dataclass(frozen=True)
class VadParams:
    """``[asr.vad]`` as the device server uses it (defaults as the reference)."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    max_silence_duration_ms: int = 200
    min_speech_duration_ms: int = 400
    hangover_ms: int = 500

    @property
    def release_windows(self) -> int:
        """Silent windows that end speech: ``max_silence_duration_ms * 16 // 512``."""
        return self.max_silence_duration_ms * 16 // WINDOW

    @classmethod
    def from_config(cls, vad: Any | None) -> VadParams:
        """From a validated ``VadConfig`` (threshold capped, neg_threshold set), or defaults."""
        if vad is None:
            return cls()
        threshold = min(float(vad.threshold), 0.95)
        neg = vad.neg_threshold if vad.neg_threshold is not None else threshold - 0.15
        return cls(
            threshold=threshold,
            neg_threshold=max(float(neg), 0.05),
            max_silence_duration_ms=int(vad.max_silence_duration_ms),
            min_speech_duration_ms=int(vad.min_speech_duration_ms),
            hangover_ms=int(vad.hangover_ms),
        )


class Hysteresis:
    """Per-window ``in_speech`` from speech probabilities (docs/protocol.md#turn-detection)."""

    __slots__ = ("_release", "_thr", "in_speech", "neg", "silent")

    def __init__(self, params: VadParams) -> None:
        self._thr = params.threshold
        self.neg = params.neg_threshold
        self._release = params.release_windows
        self.in_speech = False
        #: quiet windows counted towards the release since the last speech window
        self.silent = 0

    def reset(self) -> None:
        self.in_speech = False
        self.silent = 0

    def step(self, p: float) -> bool:
        if p > self._thr:
            self.in_speech = True
            self.silent = 0
        elif p < self.neg:
            self.silent += 1
            if self.silent >= self._release:
                self.in_speech = False
        return self.in_speech


class RoundTracker:
    """The round logic of docs/protocol.md#stream-mode over VAD windows.

    ``window(p)`` returns what the window did; ``speech_seen`` says whether any window of
    this utterance was speech; ``released`` is True exactly on the window where speech ended
    (hysteresis release), for the trace; ``quiet`` on a quiet window (``p < neg_threshold``)
    that follows one that was not, while in speech (or releasing) after at least
    ``min_speech_duration_ms`` of speech: from there to the pause every window is quiet, so a
    transcription started there hears everything the pause would. ``wait_for_speech``: silence
    before the first speech window does not end the turn.
    """

    __slots__ = (
        "_hang",
        "_min",
        "_wait",
        "_was_quiet",
        "hyst",
        "quiet",
        "released",
        "silence_ms",
        "speech_ms",
        "speech_seen",
    )

    def __init__(self, params: VadParams, *, wait_for_speech: bool = False) -> None:
        self.hyst = Hysteresis(params)
        self._min = params.min_speech_duration_ms
        self._hang = params.hangover_ms
        self._wait = wait_for_speech
        self.speech_ms = 0
        self.silence_ms = 0
        self.speech_seen = False
        self.released = False
        self.quiet = False
        self._was_quiet = False

    def reset(self) -> None:
        self.hyst.reset()
        self.speech_ms = self.silence_ms = 0
        self.speech_seen = self.released = self.quiet = self._was_quiet = False

    def window(self, p: float, ms: int = WINDOW_MS) -> TurnEvent:
        was = self.hyst.in_speech
        in_speech = self.hyst.step(p)
        self.released = was and not in_speech
        is_quiet = p < self.hyst.neg
        first = is_quiet and not self._was_quiet and (in_speech or self.released)
        self._was_quiet = is_quiet
        self.quiet = first and self.speech_ms >= self._min
        if in_speech:
            self.speech_seen = True
            self.speech_ms += ms
            self.silence_ms = 0
            return TurnEvent.NONE
        self.silence_ms += ms
        if self.speech_ms >= self._min:
            pause = self.speech_ms > self._min
            self.speech_ms = self.silence_ms = 0
            return TurnEvent.PAUSE if pause else TurnEvent.END
        if self.silence_ms > self._hang and (self.speech_seen or not self._wait):
            return TurnEvent.END
        return TurnEvent.NONE


class VadTurnDetector:
    """A :class:`~echokit_fast.turn.detector.TurnDetector`: a VAD stream of its own in the
    factory's :class:`~echokit_fast.backends.vad.pool.VadPool` (a piece still being run after a
    cancel can never touch a newer utterance's) and a :class:`RoundTracker`."""

    __slots__ = ("_tracker", "_vad", "speech_end")

    def __init__(
        self, vad: PooledStream, params: VadParams, *, wait_for_speech: bool = False
    ) -> None:
        self._vad = vad
        self._tracker = RoundTracker(params, wait_for_speech=wait_for_speech)
        self.speech_end: float | None = None

    @property
    def speech_seen(self) -> bool:
        return self._tracker.speech_seen

    @property
    def speaking(self) -> bool:
        return self._tracker.hyst.in_speech

    async def feed(self, pcm16: bytes) -> list[TurnEvent]:
        arrived = time.monotonic()
        probs = await self._vad.probabilities(pcm16)
        tracker = self._tracker
        events: list[TurnEvent] = []
        for p in probs:
            result = tracker.window(p)
            # (after an END the turn is over: later windows count for speech_seen only)
            if tracker.released and TurnEvent.END not in events:
                self.speech_end = arrived
            if tracker.quiet and TurnEvent.END not in events:
                events.append(TurnEvent.QUIET)
            if result is not TurnEvent.NONE:
                events.append(result)
        return events


class VadTurnDetectors:
    """The factory of :class:`VadTurnDetector`: ``params`` (``[asr.vad]``) and the Silero
    model (``model()`` loads it; by default a model of this factory's own), whose
    :class:`~echokit_fast.backends.vad.pool.VadPool` runs every detector's windows together."""

    def __init__(
        self, params: VadParams | None = None, model: Callable[[], SileroVad] | None = None
    ) -> None:
        self.params = params or VadParams()
        self._load = model or SileroVad
        self._pool: VadPool | None = None

    def prepare(self) -> None:
        if self._pool is None:
            self._pool = VadPool(self._load())

    def __call__(self, *, wait_for_speech: bool = False) -> VadTurnDetector:
        if self._pool is None:
            raise RuntimeError("VadTurnDetectors.prepare() was not called")
        p = self.params
        stream = self._pool.open(threshold=p.threshold, neg_threshold=p.neg_threshold)
        return VadTurnDetector(stream, p, wait_for_speech=wait_for_speech)

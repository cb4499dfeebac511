"""Semantic end of turn: Smart Turn v3.2 over the VAD rounds of :mod:`.vad_rounds`.

The model (``echokit_fast/assets/smart-turn-v3.2-cpu.onnx``, BSD-2 by Daily, licence file
beside it; byte-identical to the file of the ``pipecat-ai`` 1.14.0 wheel, sha256 checked at
load) reads the Whisper log-mel features (80 bins, ``_native.whisper_log_mel`` with the
waveform normalised) of the last 8 s of 16 kHz audio -- zero-padded at the front when shorter
-- and gives the probability that the speaker has finished.

:class:`SmartTurnDetector` runs the same Silero VAD and round logic as
:class:`~.vad_rounds.VadTurnDetector`; at each pause (speech, then
``max_silence_duration_ms`` of silence) it asks the model about the utterance up to that
window: a probability above ``threshold`` ends the turn at once; otherwise the turn goes on and
``max_wait_ms`` of silence end it (the fixed-silence rule, as fallback).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from echokit_fast import _native
from echokit_fast.backends.vad.pool import PooledStream, VadPool
from echokit_fast.backends.vad.silero import SileroVad, read_asset
from echokit_fast.turn.detector import TurnEvent
from echokit_fast.turn.vad_rounds import WINDOW, RoundTracker, VadParams

__all__ = [
    "MODEL_FILE",
    "MODEL_SHA256",
    "SmartTurnDetector",
    "SmartTurnDetectors",
    "SmartTurnModel",
]

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
RATE = 16000
WINDOW_SAMPLES = 8 * RATE  # the model's 8 s


class SmartTurnModel:
    """The Smart Turn v3.2 session (1 intra-op thread). Thread-safe; :meth:`shared` is the
    process-wide instance."""

    _shared: SmartTurnModel | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        import onnxruntime as ort

        data = read_asset(MODEL_FILE, MODEL_SHA256, "Smart Turn")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            data, sess_options=opts, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def shared(cls) -> SmartTurnModel:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def probability(self, pcm16: bytes) -> float:
        """Probability that the speech in ``pcm16`` (16 kHz mono PCM16 LE; its last 8 s are
        used) is a finished turn. Blocking (run it in a worker thread)."""
        x = np.frombuffer(pcm16, dtype="<i2")[-WINDOW_SAMPLES:]
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - len(x), np.int16), x])
        features = _native.whisper_log_mel(x, normalize=True)[np.newaxis]
        (out,) = self._session.run(["logits"], {"input_features": features})
        return float(out[0, 0])


class SmartTurnDetector:
    """A :class:`~echokit_fast.turn.detector.TurnDetector`: VAD rounds whose pauses Smart Turn
    judges (module docstring). ``max_wait_ms`` replaces ``params.hangover_ms``."""

    __slots__ = (
        "_model",
        "_pcm",
        "_start",
        "_threshold",
        "_tracker",
        "_vad",
        "_windows",
        "speech_end",
    )

    def __init__(
        self,
        vad: PooledStream,
        params: VadParams,
        model: SmartTurnModel,
        *,
        threshold: float = 0.5,
        max_wait_ms: int = 3000,
        wait_for_speech: bool = False,
    ) -> None:
        self._vad = vad
        params = dataclasses.replace(params, hangover_ms=max_wait_ms)
        self._tracker = RoundTracker(params, wait_for_speech=wait_for_speech)
        self._model = model
        self._threshold = threshold
        self._pcm = bytearray()  # the utterance's audio from sample _start on
        self._start = 0
        self._windows = 0  # VAD windows run so far (window k ends at sample (k + 1) * WINDOW)
        self.speech_end: float | None = None

    @property
    def speech_seen(self) -> bool:
        return self._tracker.speech_seen

    @property
    def speaking(self) -> bool:
        return self._tracker.hyst.in_speech

    async def feed(self, pcm16: bytes) -> list[TurnEvent]:
        arrived = time.monotonic()
        self._pcm += pcm16
        probs = await self._vad.probabilities(pcm16)
        tracker = self._tracker
        events: list[TurnEvent] = []
        for p in probs:
            self._windows += 1
            result = tracker.window(p)
            if tracker.released and TurnEvent.END not in events:
                self.speech_end = arrived
            if tracker.quiet and TurnEvent.END not in events:
                events.append(TurnEvent.QUIET)
            if result is TurnEvent.PAUSE and TurnEvent.END not in events:
                events.append(result)
                if await self._complete():
                    events.append(TurnEvent.END)
            elif result is not TurnEvent.NONE:
                events.append(result)
        self._trim()
        return events

    async def _complete(self) -> bool:
        """Whether the model says the audio up to the current window is a finished turn."""
        end = self._windows * WINDOW - self._start
        clip = bytes(self._pcm[2 * max(0, end - WINDOW_SAMPLES) : 2 * end])
        p = await asyncio.to_thread(self._model.probability, clip)
        return p > self._threshold

    def _trim(self) -> None:
        """Keep the 8 s before the current window and what the VAD has not run yet."""
        drop = self._windows * WINDOW - WINDOW_SAMPLES - self._start
        if drop > 0:
            del self._pcm[: 2 * drop]
            self._start += drop


class SmartTurnDetectors:
    """The factory of :class:`SmartTurnDetector`: ``params`` (``[asr.vad]``), the Silero model
    (``model()`` loads it) and the process-wide :meth:`SmartTurnModel.shared`."""

    def __init__(
        self,
        params: VadParams | None = None,
        model: Callable[[], SileroVad] | None = None,
        *,
        threshold: float = 0.5,
        max_wait_ms: int = 3000,
    ) -> None:
        self.params = params or VadParams()
        self.threshold = threshold
        self.max_wait_ms = max_wait_ms
        self._load = model or SileroVad
        self._pool: VadPool | None = None
        self._turn: SmartTurnModel | None = None

    @classmethod
    def from_config(cls, vad: Any, model: Callable[[], SileroVad] | None = None) -> Any:
        """The detectors ``[asr.vad]`` asks for: these, or the fixed-silence
        :class:`~.vad_rounds.VadTurnDetectors`."""
        from echokit_fast.turn.vad_rounds import VadTurnDetectors

        params = VadParams.from_config(vad)
        if getattr(vad, "turn_detector", "silence") != "smart_turn":
            return VadTurnDetectors(params, model=model)
        return cls(
            params,
            model,
            threshold=vad.smart_turn_threshold,
            max_wait_ms=vad.smart_turn_max_wait_ms,
        )

    def prepare(self) -> None:
        if self._pool is None:
            self._pool = VadPool(self._load())
        if self._turn is None:
            self._turn = SmartTurnModel.shared()

    def __call__(self, *, wait_for_speech: bool = False) -> SmartTurnDetector:
        if self._pool is None or self._turn is None:
            raise RuntimeError("SmartTurnDetectors.prepare() was not called")
        p = self.params
        stream = self._pool.open(threshold=p.threshold, neg_threshold=p.neg_threshold)
        return SmartTurnDetector(
            stream,
            p,
            self._turn,
            threshold=self.threshold,
            max_wait_ms=self.max_wait_ms,
            wait_for_speech=wait_for_speech,
        )

"""The turn-detection seam: what the conversation engine asks of a turn detector.

A :class:`TurnDetector` follows one utterance of the user's microphone stream (16 kHz mono
PCM16 little-endian bytes, whole samples) and says when the user paused (the engine starts a
speculative transcription of everything heard so far) and when the turn is over (the engine
answers). One detector serves one utterance; the session asks its
:class:`TurnDetectorFactory` for a new one at every utterance.

The first implementation is the VAD-round logic of :mod:`echokit_fast.turn.vad_rounds`. A
:class:`TranscribingDetector` is also the utterance's recognizer (a streaming ASR,
:mod:`echokit_fast.turn.asr_stream`): its interim transcripts and its end of the turn come from
the recognizer, with or without new audio.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

__all__ = ["TranscribingDetector", "TurnDetector", "TurnDetectorFactory", "TurnEvent"]


class TurnEvent(enum.Enum):
    #: nothing happened
    NONE = 0
    #: the user paused after enough speech: a new round starts (interim and restarted ASR)
    PAUSE = 1
    #: end of the turn: the current round's transcript is final
    END = 2
    #: a recognizer's interim transcript changed (:attr:`TranscribingDetector.interim`)
    INTERIM = 3
    #: speech may be ending: the first quiet window after enough speech, before the pause
    #: (an early transcription may start; a PAUSE follows if the quiet lasts)
    QUIET = 4


class TurnDetector(Protocol):
    """One utterance's turn detection."""

    @property
    def speech_seen(self) -> bool:
        """Whether any of the audio fed so far was speech."""
        ...

    @property
    def speaking(self) -> bool:
        """Whether the user is speaking at the end of the audio fed so far (False where the
        detector cannot tell): speech after a pause drops the answer speculated on it."""
        ...

    @property
    def speech_end(self) -> float | None:
        """When the user last stopped speaking (``time.monotonic()`` of the arrival of the
        audio in which speech ended), or None."""
        ...

    async def feed(self, pcm16: bytes) -> list[TurnEvent]:
        """Take the next piece of audio; return the :attr:`TurnEvent.QUIET`,
        :attr:`TurnEvent.PAUSE` and :attr:`TurnEvent.END` events it caused, in order (empty if
        none). May run the work
        in a worker thread; a detector is fed by one caller at a time."""
        ...


@runtime_checkable
class TranscribingDetector(TurnDetector, Protocol):
    """A turn detector that transcribes the utterance itself. :meth:`feed` passes the audio on
    (it returns only an :attr:`TurnEvent.END` of the detector's own limits); :meth:`events`
    yields what the recognizer reports: :attr:`TurnEvent.INTERIM` as the transcript grows, then
    :attr:`TurnEvent.END` where the recognizer ends the sentence (or fails). After the end of
    the turn -- or to end it early -- :meth:`transcript` gives the final transcript."""

    @property
    def interim(self) -> str:
        """The transcript so far (what the last :attr:`TurnEvent.INTERIM` reported)."""
        ...

    def events(self) -> AsyncIterator[TurnEvent]:
        """The recognizer's events, up to and including the END."""
        ...

    async def transcript(self) -> str:
        """End the audio and return the final transcript ("" for no speech); closes the
        detector. Raises the recognizer's failure (a BackendError)."""
        ...

    def close(self) -> None:
        """Stop recognizing (the utterance was dropped). Idempotent."""
        ...


class TurnDetectorFactory(Protocol):
    """Makes the detectors of a server's sessions."""

    def prepare(self) -> None:
        """Load what the detectors need (a model ...). Blocking: called once, in a worker
        thread, before the first detector is made."""
        ...

    def __call__(self, *, wait_for_speech: bool = False) -> TurnDetector:
        """A new detector for one utterance. ``wait_for_speech``: the device streams its
        microphone before anyone speaks, so what the detector hears before the user's first
        speech (silence, noise without words) must not end the turn."""
        ...

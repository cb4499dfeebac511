"""The turn-detection seam: what the conversation engine asks of a turn detector.

A :class:`TurnDetector` follows one utterance of the user's microphone stream (16 kHz mono
PCM16 little-endian bytes, whole samples) and says when the user paused (the engine starts a
speculative transcription of everything heard so far) and when the turn is over (the engine
answers). One detector serves one utterance; the session asks its
:class:`TurnDetectorFactory` for a new one at every utterance.

The first implementation is the VAD-round logic of :mod:`echokit_fast.turn.vad_rounds`.
"""

from __future__ import annotations

import enum
from typing import Protocol

__all__ = ["TurnDetector", "TurnDetectorFactory", "TurnEvent"]


class TurnEvent(enum.Enum):
    #: nothing happened
    NONE = 0
    #: the user paused after enough speech: a new round starts (interim and restarted ASR)
    PAUSE = 1
    #: end of the turn: the current round's transcript is final
    END = 2


class TurnDetector(Protocol):
    """One utterance's turn detection."""

    @property
    def speech_seen(self) -> bool:
        """Whether any of the audio fed so far was speech."""
        ...

    @property
    def speech_end(self) -> float | None:
        """When the user last stopped speaking (``time.monotonic()`` of the arrival of the
        audio in which speech ended), or None."""
        ...

    async def feed(self, pcm16: bytes) -> list[TurnEvent]:
        """Take the next piece of audio; return the :attr:`TurnEvent.PAUSE` and
        :attr:`TurnEvent.END` events it caused, in order (empty if none). May run the work
        in a worker thread; a detector is fed by one caller at a time."""
        ...


class TurnDetectorFactory(Protocol):
    """Makes the detectors of a server's sessions."""

    def prepare(self) -> None:
        """Load what the detectors need (a model ...). Blocking: called once, in a worker
        thread, before the first detector is made."""
        ...

    def __call__(self) -> TurnDetector:
        """A new detector for one utterance."""
        ...

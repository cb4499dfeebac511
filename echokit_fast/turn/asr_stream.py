"""Turn detection by a streaming recognizer: a
:class:`~echokit_fast.turn.detector.TranscribingDetector` over an
:class:`~echokit_fast.backends.base.AsrStream` (docs/protocol.md#stream-mode).

:class:`AsrTurnDetector` sends every piece of audio it is fed to the recognizer as it comes;
the recognizer's results are the interim transcripts, and the first sentence it ends with some
text is the end of the turn (no VAD of ours is involved; an empty sentence -- noise -- does
not end it). One more limit is the detector's own: after ``quiet_s`` seconds of audio (5 s,
the reference's) without any text from the recognizer the turn ends too (nobody spoke, or the
recognizer stalled); with ``wait_for_speech`` only once the recognizer has heard some text.
The final transcript is what the recognizer holds once the audio is ended, the sentence that
ended the turn and anything after it included.

:class:`AsrTurnDetectors` is the factory (one stream per utterance);
:func:`stream_detectors` gives one for a transcriber that can stream, else None.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import AsyncIterator

from echokit_fast.backends.base import (
    AsrStream,
    BackendError,
    Heard,
    StreamingTranscriber,
    Transcriber,
)
from echokit_fast.turn.detector import TurnEvent

__all__ = ["QUIET_S", "AsrTurnDetector", "AsrTurnDetectors", "stream_detectors"]

#: seconds of audio without a result from the recognizer that end the turn
QUIET_S = 5.0
BYTES_PER_SECOND = 32000  # 16 kHz PCM16


class AsrTurnDetector:
    """One utterance streamed to a recognizer (see the module docstring)."""

    def __init__(
        self, stream: AsrStream, *, quiet_s: float = QUIET_S, wait_for_speech: bool = False
    ) -> None:
        self._stream = stream
        self._wait = wait_for_speech
        self._quiet = int(quiet_s * BYTES_PER_SECOND)
        self._unanswered = 0  # bytes fed since the recognizer's last text
        self._fed: list[int] = []  # bytes fed up to and including each piece
        self._arrived: list[float] = []  # when each piece arrived
        self._over = False  # the turn ended
        self._done = False  # the recognizer is done (or failed)
        self._error: BackendError | None = None
        self._text = ""
        self.interim = ""
        self.speech_seen = False
        self.speaking = False  # (the recognizer does not say)
        self.speech_end: float | None = None

    async def feed(self, pcm16: bytes) -> list[TurnEvent]:
        self._stream.send(pcm16)
        self._fed.append((self._fed[-1] if self._fed else 0) + len(pcm16))
        self._arrived.append(time.monotonic())
        self._unanswered += len(pcm16)
        waited = self._unanswered >= self._quiet and (self.speech_seen or not self._wait)
        if waited and not self._over:
            self._over = True
            return [TurnEvent.END]
        return []

    async def events(self) -> AsyncIterator[TurnEvent]:
        while not self._over:
            heard = await self._next()
            if heard is None or (heard.final and heard.text):
                self._over = True
                if heard is not None:
                    self._mark_speech_end(heard.end_s)
                yield TurnEvent.END
                return
            if heard.text and heard.text != self.interim:
                self.interim = heard.text
                yield TurnEvent.INTERIM

    async def transcript(self) -> str:
        try:
            if not self._done:
                self._stream.finish()
                while await self._next() is not None:
                    pass
            if self._error is not None:
                raise self._error
            return self._text
        finally:
            self.close()

    def close(self) -> None:
        self._stream.close()

    async def _next(self) -> Heard | None:
        """The recognizer's next result (None when it is done or failed)."""
        if self._done:
            return None
        try:
            heard = await self._stream.result()
        except BackendError as exc:
            self._error = exc
            heard = None
        if heard is None:
            self._done = True
            return None
        if heard.text:
            self._unanswered = 0
            self._text = heard.text
            self.speech_seen = True
        return heard

    def _mark_speech_end(self, end_s: float | None) -> None:
        """``speech_end``: when the piece of audio holding the sentence's end arrived (the last
        piece fed if the recognizer did not say where it ends)."""
        if not self._arrived:
            return
        i = len(self._fed) - 1
        if end_s is not None:
            i = min(bisect.bisect_left(self._fed, int(end_s * BYTES_PER_SECOND)), i)
        self.speech_end = self._arrived[i]


class AsrTurnDetectors:
    """The factory of :class:`AsrTurnDetector`: a stream of ``transcriber`` per utterance."""

    def __init__(self, transcriber: StreamingTranscriber, *, quiet_s: float = QUIET_S) -> None:
        self.transcriber = transcriber
        self.quiet_s = quiet_s

    def prepare(self) -> None:
        """Nothing to load (the recognizer is remote)."""

    def __call__(self, *, wait_for_speech: bool = False) -> AsrTurnDetector:
        return AsrTurnDetector(
            self.transcriber.stream(), quiet_s=self.quiet_s, wait_for_speech=wait_for_speech
        )


def stream_detectors(transcriber: Transcriber) -> AsrTurnDetectors | None:
    """The detectors of ``transcriber``'s streams if it can stream (a
    :class:`~echokit_fast.backends.base.StreamingTranscriber`), else None."""
    if isinstance(transcriber, StreamingTranscriber):
        return AsrTurnDetectors(transcriber)
    return None

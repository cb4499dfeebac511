"""The seam between the conversation engine and a device protocol.

The engine (:mod:`.session`, :mod:`.pipeline`) knows nothing of any wire format. A device
front end (``echokit_fast/devices/<protocol>/``) gives it one :class:`DeviceConnection` per
connected device, the engine's side of that connection: what the engine tells the device
(:class:`DeviceOutput`: end of speech, transcripts, the spoken segments of the answer, what
is shown without being spoken, notifications and questions, the end of the response, failure
notices) and two facts about how the device talks. The front end
drives the engine through the :class:`DeviceInput` methods of the device's
:class:`~echokit_fast.conversation.session.Session`: attach/detach, start listening,
microphone audio, submit, typed text, cancel the turn.

A turn, as the engine emits it::

    [end_of_speech]  transcript(final=False)*  transcript(final=True)
    ((segment_start  audio*  segment_end) | display | notify | choose)*
    [notice  segment_start  audio*  segment_end]        (a failure: the notice, also spoken)
    [goodbye]                                           (a live model ended the conversation)
    response_end

``response_end`` ends every turn exactly once, an empty transcript included (then it comes
right after ``end_of_speech``), except a turn cancelled by new input from the device. A turn
of the conversation's own (:class:`~echokit_fast.backends.base.Proactive`) has no transcript.
Audio is float32 mono PCM at :data:`SAMPLE_RATE`; how it is encoded, framed and paced is the
front end's business. Once the connection is gone every method raises :class:`DeviceGone`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from echokit_fast.backends.base import ToolBox

__all__ = ["SAMPLE_RATE", "DeviceConnection", "DeviceGone", "DeviceInput", "DeviceOutput"]

#: the engine's audio rate, both ways (microphone in, speech out)
SAMPLE_RATE = 16000


class DeviceGone(Exception):
    """The device's connection is closed (or was taken over); nothing more reaches it."""


class DeviceOutput(Protocol):
    """What the engine tells a device, in the order of the module docstring."""

    async def end_of_speech(self) -> None:
        """The engine decided the user's turn is over (its turn detector, not the device, ended
        it)."""
        ...

    async def transcript(self, text: str, *, final: bool) -> None:
        """What the user said: interim (``final=False``, while the user pauses) or final (the
        turn's input, typed text included)."""
        ...

    async def segment_start(self, text: str) -> None:
        """A spoken segment of the answer begins; ``text`` is what it says."""
        ...

    async def audio(self, pcm: npt.NDArray[np.float32]) -> int:
        """The segment's next audio. Returns how many audio packets went to the device (0 when
        the front end is still collecting a whole packet), for the turn's trace."""
        ...

    async def segment_end(self) -> int:
        """The segment is complete (or cut short by a failure): the rest of its audio goes out.
        Returns how many audio packets that was."""
        ...

    async def display(self, text: str) -> None:
        """Show ``text`` without speaking it."""
        ...

    async def notify(self, text: str) -> None:
        """A notification for the user (shown, not spoken)."""
        ...

    async def choose(self, message: str, items: list[str]) -> int:
        """Ask the user to pick one of ``items``; return the index picked (as the device
        sent it). Waits as long as the user takes: the turn is cancelled by new input or a
        disconnection meanwhile."""
        ...

    async def response_end(self) -> None:
        """The turn is over; the device may listen again."""
        ...

    async def notice(self, text: str) -> None:
        """A failure, in words fit for the user (the engine then speaks it as a segment)."""
        ...

    async def goodbye(self) -> None:
        """The live model's service ended the conversation (the next turn starts a new one)."""
        ...


class DeviceConnection(DeviceOutput, Protocol):
    """The engine's side of one device connection."""

    #: keep the conversation's history from an earlier connection (else it starts afresh)
    keep_history: bool
    #: the engine's turn detector ends the user's utterance; else only the device does
    #: (:meth:`DeviceInput.submit`) and all audio since the last turn is the utterance
    server_vad: bool
    #: (with ``server_vad``) the device streams its microphone from the start of listening,
    #: silence included, and keeps listening after each answer (the xiaozhi firmware's auto
    #: and realtime modes): silence before the user speaks never ends an utterance (only its
    #: last :data:`~.session.PREROLL_S` seconds are kept), and each turn that ends (not
    #: cancelled) starts the next utterance without a :meth:`DeviceInput.start_listening`
    continuous_listening: bool
    #: (with ``continuous_listening``) the device's microphone stays on through the answer,
    #: its echo cancelled on the device (the xiaozhi realtime mode): the next utterance is
    #: listened for from the end of the user's speech on, and speech heard in it while the
    #: answer is still running cuts the answer (:meth:`answer_cut`) -- a barge-in
    barge_in: bool
    #: the device's own tools, offered to its conversation's LLM while this connection is the
    #: session's (None: none)
    tools: ToolBox | None

    async def answer_cut(self) -> None:
        """The user spoke over the answer (:attr:`barge_in`): the turn was cancelled; end its
        playback on the device. The utterance that cut it goes on."""
        ...

    def disconnect(self) -> None:
        """End this connection from the server's side (a newer connection for the device took
        over, or the server shuts down): the front end ends the device's response and closes
        it. Returns at once."""
        ...

    async def closed(self) -> None:
        """Return once the front end is done with this connection (its last frames sent and
        the socket closed)."""
        ...


class DeviceInput(Protocol):
    """What a front end tells the engine (a :class:`~.session.Session` implements it). Calls
    for a connection that is no longer the session's are ignored."""

    async def attach(self, conn: DeviceConnection) -> bool:
        """Make ``conn`` the device's connection (the previous one is disconnected). False if
        an even newer connection took over meanwhile."""
        ...

    async def detach(self, conn: DeviceConnection) -> None:
        """``conn`` ended: its turn is cancelled, the session keeps the history a while."""
        ...

    async def start_listening(self, conn: DeviceConnection) -> None:
        """The user starts talking (a new utterance; an answer still playing is cancelled)."""
        ...

    async def audio(self, conn: DeviceConnection, pcm16: bytes) -> None:
        """Microphone audio: 16 kHz mono PCM16 little-endian, whole samples."""
        ...

    async def submit(self, conn: DeviceConnection) -> None:
        """The device ends the utterance: transcribe and answer it."""
        ...

    async def text_input(self, conn: DeviceConnection, text: str) -> None:
        """Typed input: the user's utterance without ASR (refused as :meth:`refuse_text` is
        when over the session's ``max_text_bytes``)."""
        ...

    async def refuse_text(self, conn: DeviceConnection, size: int) -> None:
        """A text input of ``size`` bytes too long to take: the turn is a failure notice."""
        ...

    async def cancel_turn(self) -> None:
        """Stop the turn in progress (no ``response_end`` for it)."""
        ...

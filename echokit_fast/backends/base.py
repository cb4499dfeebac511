"""The interfaces between the device server and its backends.

The device server (one session per EchoKit device) only talks to these three
protocols; each has local implementations (embedded engines) and remote ones
(OpenAI-compatible and EchoKit-ecosystem HTTP/WebSocket services):

* `Transcriber` — speech to text (faster-whisper in-process, or a remote
  `/v1/audio/transcriptions`), with an optional speculative start; a
  `StreamingTranscriber` also takes the audio while the user speaks (`AsrStream`);
* `Speaker` — text to speech, streamed as float32 PCM chunks;
* `ChatModel` / `Conversation` — the LLM with history, prompts and tools (a
  `ToolConversation` also offers the tools of a `ToolBox`, the device's own; a
  `Rewindable` one can answer speculatively; or a service that acts on its own,
  `Proactive`: the Claude Code bridge);
* `LiveConversation` — instead of all three, a live speech-to-speech model (Gemini Live) that
  hears the user's audio as it is spoken and answers with its own speech or with text.

Every backend failure is raised as `BackendError`, whose `notice` is a short
sentence fit to show or speak to the user ("The speech recognizer is not
reachable."); the detail goes to the log. Cancellation (`asyncio.CancelledError`)
must propagate promptly and leave nothing running.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.float32]  # mono float32 samples in [-1, 1]


class BackendError(Exception):
    """A backend failed. `notice` is for the user, `str(self)` for the log."""

    def __init__(self, detail: str, *, notice: str, backend: str = "") -> None:
        super().__init__(detail)
        self.notice = notice
        self.backend = backend


class BackendBusy(BackendError):
    """A local engine's queue is full; try again shortly."""


# --- ASR ---------------------------------------------------------------------


@runtime_checkable
class Transcription(Protocol):
    """A transcription started in the background (speculative ASR)."""

    def cancel(self) -> None: ...

    async def result(self) -> str: ...


@runtime_checkable
class Transcriber(Protocol):
    async def transcribe(self, audio: Pcm, *, sample_rate: int = 16000) -> str:
        """The text of `audio` ("" for no speech). Raises BackendError."""
        ...

    def start(self, audio: Pcm, *, sample_rate: int = 16000) -> Transcription:
        """Begin transcribing `audio` now; `result()` later, or `cancel()`.

        The device server calls this when the VAD first hears silence and reuses
        the result if no more speech arrives before the end-of-turn silence ends.
        """
        ...


@dataclass(frozen=True)
class Heard:
    """A streaming recognizer's result: the transcript so far (the sentences it ended, then the
    one in progress), whether the recognizer has just ended a sentence (``final``), and where
    that sentence ends in the audio sent (seconds; None if it did not say)."""

    text: str
    final: bool = False
    end_s: float | None = None


@runtime_checkable
class AsrStream(Protocol):
    """One utterance streamed to a recognizer while the user speaks
    (:meth:`StreamingTranscriber.stream`). Made in the running event loop; it connects at once.
    One reader of :meth:`result` at a time."""

    def send(self, pcm16: bytes) -> None:
        """Queue the next audio (16 kHz mono PCM16); returns at once. Ignored after
        :meth:`finish`."""
        ...

    def finish(self) -> None:
        """No more audio: the recognizer ends what it heard."""
        ...

    async def result(self) -> Heard | None:
        """The next result as it comes; None once the recognizer is done (after
        :meth:`finish`), and from then on. Raises BackendError (and again at every call)."""
        ...

    def close(self) -> None:
        """Stop now, whatever the state (the connection is closed in the background).
        Idempotent."""
        ...


@runtime_checkable
class StreamingTranscriber(Transcriber, Protocol):
    def stream(self) -> AsrStream:
        """A new :class:`AsrStream` for one utterance."""
        ...


# --- TTS ---------------------------------------------------------------------


@runtime_checkable
class Speaker(Protocol):
    def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        """Synthesize `text`; yield mono float32 chunks at `sample_rate` as soon as
        each exists (the first chunk must not wait for the whole text).
        Raises BackendError."""
        ...


# --- LLM ---------------------------------------------------------------------


@dataclass(frozen=True)
class SpeakNow:
    """A segment the conversation wants spoken on its own, in order with the reply
    text (e.g. an MCP server's `call_mcp_message` while its tool runs)."""

    text: str


@dataclass(frozen=True)
class Display:
    """Text to show the user without speaking it, in order with the reply."""

    text: str


@dataclass(frozen=True)
class Notify:
    """A notification for the user (shown, not spoken), in order with the reply."""

    text: str


def _future() -> asyncio.Future[int]:
    return asyncio.get_running_loop().create_future()


@dataclass(frozen=True)
class Choose:
    """A question for the user: ``message`` and the ``items`` to pick from, in order with the
    reply. Make it in the running loop; the engine sets ``answer`` to the index the user
    picked (awaiting it holds the reply until then)."""

    message: str
    items: tuple[str, ...]
    answer: asyncio.Future[int] = field(default_factory=_future, compare=False)


#: what a reply streams: text deltas to speak, and the items above
Reply = str | SpeakNow | Display | Notify | Choose


@dataclass(frozen=True)
class Tool:
    """A tool the LLM may call: its name, what it does, its JSON-schema ``parameters``."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolBox(Protocol):
    """Tools a device offers its conversation (the xiaozhi firmware's own MCP server),
    listed to the LLM beside the configured MCP servers' tools."""

    def tools(self) -> list[Tool]:
        """The tools known now (the list may grow as the device announces them)."""
        ...

    async def call(self, name: str, arguments: str) -> list[str]:
        """Run tool ``name`` with its JSON ``arguments``; the tool message contents (a failure
        of the tool, a timeout included, is told in them)."""
        ...


@runtime_checkable
class Conversation(Protocol):
    """One device's LLM conversation: prompts, history, tools. One that holds a connection of
    its own (the Claude Code bridge) also has ``close()``, called when the device's session is
    dropped."""

    def reply(self, user_text: str) -> AsyncIterator[Reply]:
        """Stream the answer to `user_text` as text deltas (and the other Reply items).

        History is updated as echokit_server does: the user message is
        added first; the assistant message only when the stream completes.
        Raises BackendError.
        """
        ...

    def reset(self) -> None:
        """Back to the configured prompts (a non-reconnect connection)."""
        ...


@runtime_checkable
class ToolConversation(Conversation, Protocol):
    """A conversation that can offer a device's tools too."""

    def use_tools(self, tools: ToolBox | None) -> None:
        """Offer ``tools`` (the device's, None: none) from the next request on."""
        ...


@runtime_checkable
class Rewindable(Conversation, Protocol):
    """A conversation whose answer may be started before the user's turn has ended and then
    dropped (the speculative reply, docs/architecture.md#speculative-reply)."""

    def speculate(self, adopted: asyncio.Event) -> object:
        """The next :meth:`reply` is speculative: until ``adopted`` is set it does nothing
        outside the conversation (its tool calls wait). Returns the state :meth:`rewind` goes
        back to."""
        ...

    def rewind(self, state: object) -> None:
        """Back to ``state`` (from :meth:`speculate`): whatever the speculative reply added is
        gone -- the user message, a partial or whole answer, a provider's chained id."""
        ...


# --- live (speech to speech) ------------------------------------------------------


@dataclass(frozen=True)
class HeardPiece:
    """A piece of what the user said, as the live model transcribed it."""

    text: str


@dataclass(frozen=True)
class Said:
    """A piece of the answer's text: the transcript of the model's speech, or (text answers)
    the answer itself, for the Speaker."""

    text: str


@dataclass(frozen=True)
class Goodbye:
    """The live service ends the conversation (Gemini's ``goAway``): the answer stops here and
    the next turn starts a new conversation."""


#: what an answer of a live model yields: transcripts, answer text, speech (16 kHz), goodbye
LiveEvent = HeardPiece | Said | Goodbye | Pcm


@runtime_checkable
class LiveConversation(Protocol):
    """One device's conversation with a live model, which keeps the context itself. A turn:
    ``start``, ``hear`` as the user speaks, ``finish`` (or one ``write``), then ``answer``.
    Every failure is a BackendError; the next turn tries again on a fresh connection."""

    #: the answers are text for the Speaker to speak (else the model's speech and its
    #: transcript)
    text_answers: bool

    async def start(self) -> None:
        """The user starts speaking (connects first when needed)."""
        ...

    async def hear(self, pcm16: bytes) -> None:
        """The user's audio so far: 16 kHz mono PCM16."""
        ...

    async def finish(self) -> None:
        """The user has finished speaking: the model answers."""
        ...

    async def write(self, text: str) -> None:
        """Typed input: a whole user turn (after any audio of one that was not finished)."""
        ...

    def answer(self) -> AsyncIterator[LiveEvent]:
        """The answer to the last finished or written turn, until its end."""
        ...

    def reset(self) -> None:
        """A fresh context: the connection is closed now, the next turn opens a new one."""
        ...

    def close(self) -> None:
        """Close the connection (in the background); the conversation is not used again."""
        ...


@runtime_checkable
class Proactive(Protocol):
    """A Conversation whose service also acts on its own (the Claude Code bridge: Claude works
    on after the user's words and asks for permissions). While a device is attached and no
    turn runs, the engine gives it a turn of its own whenever it has something for the user."""

    def attached(self) -> None:
        """A device connection was attached: what the service said last is for it too."""
        ...

    async def wait_unprompted(self) -> None:
        """Return once the service has something for the user that no turn presented."""
        ...

    def unprompted(self) -> AsyncIterator[Reply]:
        """A turn of the service's own: what it has for the user. Raises BackendError."""
        ...


@runtime_checkable
class Notifications(Protocol):
    """A conversation factory that knows which devices have something waiting for them."""

    def has_notification(self, device_id: str) -> bool: ...


# --- all three -----------------------------------------------------------------


class Backends(NamedTuple):
    """What a conversation engine talks to; unpacks as ``(transcriber, speaker, factory)``.
    ``conversation_factory(device_id)`` gives one device's :class:`Conversation`, or its
    :class:`LiveConversation` in the live layouts, where there is no transcriber (the model
    hears the audio) and a Speaker only for text answers."""

    transcriber: Transcriber | None
    speaker: Speaker | None
    conversation_factory: Callable[[str], Conversation | LiveConversation]

    @classmethod
    def of(cls, value: Any) -> Backends:
        """``value`` itself, or a ``(transcriber, speaker, conversation_factory)`` tuple."""
        if isinstance(value, Backends):
            return value
        transcriber, speaker, factory = value
        return cls(transcriber, speaker, factory)

    async def aclose(self) -> None:
        """Close the HTTP clients of the remote backends."""
        factory = self.conversation_factory
        owner = getattr(factory, "__self__", factory)  # a bound method's object, or itself
        for obj in (self.transcriber, self.speaker, owner):
            close = getattr(obj, "aclose", None)
            if close is not None:
                await close()

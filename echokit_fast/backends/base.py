"""The interfaces between the device server and its backends.

The device server (one session per EchoKit device) only talks to these three
protocols; each has local implementations (embedded engines) and remote ones
(OpenAI-compatible and EchoKit-ecosystem HTTP/WebSocket services):

* `Transcriber` — speech to text (faster-whisper in-process, or a remote
  `/v1/audio/transcriptions`), with an optional speculative start;
* `Speaker` — text to speech, streamed as float32 PCM chunks;
* `ChatModel` / `Conversation` — the LLM with history, prompts and tools (or a service that
  acts on its own, `Proactive`: the Claude Code bridge).

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


@runtime_checkable
class Conversation(Protocol):
    """One device's LLM conversation: prompts, history, tools."""

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
    ``conversation_factory(device_id)`` gives one device's :class:`Conversation`."""

    transcriber: Transcriber
    speaker: Speaker
    conversation_factory: Callable[[str], Conversation]

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

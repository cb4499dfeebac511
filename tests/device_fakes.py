"""In-test backends for the device server and a device-protocol client.

The server runs on uvicorn's loop in another thread: gates are opened from the test's thread
with ``call_soon_threadsafe``, and what the fakes saw is kept in plain Python objects
(read after the events that prove it happened).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from echokit_fast.backends.base import BackendError
from echokit_fast.devices.echokit.protocol import decode_event

SR = 16000
FRAME_BYTES = 16384  # the firmware's upload frame (8192 samples)


class Gate:
    """A point the server's coroutines wait at until the test opens it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.reached = threading.Event()

    async def wait(self) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._opened:
                self.reached.set()
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        self.reached.set()
        await event.wait()

    def open(self) -> None:
        with self._lock:
            self._opened = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def until_reached(self, timeout: float = 20) -> None:
        assert await asyncio.to_thread(self.reached.wait, timeout), "gate never reached"


# --- ASR -----------------------------------------------------------------------------------


class FakeTranscription:
    def __init__(self, owner: FakeTranscriber, audio: np.ndarray) -> None:
        self.owner = owner
        self.audio = audio
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    async def result(self) -> str:
        return await self.owner._answer(self.audio)


class FakeTranscriber:
    """Answers ``heard <samples>``; ``fail`` raises BackendError; ``gate`` holds answers."""

    NOTICE = "The speech recognizer is not reachable."

    def __init__(self, *, fail: bool = False, gate: Gate | None = None, text: str | None = None):
        self.fail = fail
        self.gate = gate
        self.text = text
        self.calls: list[np.ndarray] = []  # audio of every request, in order
        self.started: list[FakeTranscription] = []

    async def _answer(self, audio: np.ndarray) -> str:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise BackendError("connection refused", notice=self.NOTICE, backend="asr")
        return self.text if self.text is not None else f"heard {len(audio)}"

    async def transcribe(self, audio: np.ndarray, *, sample_rate: int = 16000) -> str:
        assert sample_rate == SR and audio.dtype == np.float32
        self.calls.append(audio)
        return await self._answer(audio)

    def start(self, audio: np.ndarray, *, sample_rate: int = 16000) -> FakeTranscription:
        assert sample_rate == SR and audio.dtype == np.float32
        self.calls.append(audio)
        t = FakeTranscription(self, audio)
        self.started.append(t)
        return t


# --- TTS -----------------------------------------------------------------------------------


def tone(n: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    return (0.3 * np.sin(2 * np.pi * freq * t / SR)).astype(np.float32)


class FakeSpeaker:
    """Deterministic audio per text (``length(text)`` samples of a tone) in ``chunk``-sample
    chunks. ``fail_on``: texts containing it raise BackendError after one chunk.
    ``gates``: text -> Gate held before synthesis. Tracks concurrency."""

    NOTICE = "The speech synthesizer failed."

    def __init__(
        self,
        *,
        chunk: int = 700,
        fail_on: str | None = None,
        gates: dict[str, Gate] | None = None,
        length: Callable[[str], int] | None = None,
    ) -> None:
        self.chunk = chunk
        self.fail_on = fail_on
        self.gates = gates or {}
        self._length = length
        self.produced: dict[str, np.ndarray] = {}
        self.started: list[str] = []
        self.active = 0
        self.max_active = 0
        self.active_texts: list[str] = []
        self.snapshots: list[tuple[str, ...]] = []  # texts being synthesised, at each start
        self.cancelled: list[str] = []

    def length(self, text: str) -> int:
        return self._length(text) if self._length else 1000 + 97 * len(text)

    def audio(self, text: str) -> np.ndarray:
        return tone(self.length(text), 200.0 + 7 * (len(text) % 50))

    async def speak(self, text: str, *, sample_rate: int = 16000):
        assert sample_rate == SR
        self.started.append(text)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.active_texts.append(text)
        self.snapshots.append(tuple(self.active_texts))
        done = False
        try:
            gate = self.gates.get(text)
            if gate is not None:
                await gate.wait()
            pcm = self.audio(text)
            self.produced[text] = pcm
            for i in range(0, len(pcm), self.chunk):
                if i and self.fail_on and self.fail_on in text:
                    raise BackendError("tts 500", notice=self.NOTICE, backend="tts")
                yield pcm[i : i + self.chunk]
                await asyncio.sleep(0)
            done = True
        finally:
            self.active -= 1
            self.active_texts.remove(text)
            if not done:
                self.cancelled.append(text)


# --- LLM -----------------------------------------------------------------------------------

Script = Callable[[str], Iterable[Any]]


def default_script(user_text: str) -> list[Any]:
    return ["Hello there. How", " are you? ", "Fine."]


class FakeConversation:
    """Yields its script's items for each reply: strings, SpeakNow, Gate (waited on),
    exceptions (raised). History: user message first, assistant message when complete."""

    NOTICE = "The language model is not reachable."

    def __init__(self, device_id: str, script: Script) -> None:
        self.device_id = device_id
        self.script = script
        self.history: list[dict[str, str]] = []
        self.resets = 0
        self.cancelled = threading.Event()
        self.replies = 0

    async def reply(self, user_text: str):
        self.replies += 1
        self.history.append({"role": "user", "content": user_text})
        parts: list[str] = []
        completed = False
        try:
            for item in self.script(user_text):
                if isinstance(item, Gate):
                    await item.wait()
                elif isinstance(item, BaseException):
                    raise item
                else:
                    if isinstance(item, str):
                        parts.append(item)
                    yield item
            completed = True
        finally:
            if not completed:
                self.cancelled.set()
        self.history.append({"role": "assistant", "content": "".join(parts)})

    def reset(self) -> None:
        self.resets += 1
        self.history.clear()


class Conversations:
    """conversation_factory: one FakeConversation per device id, kept for inspection."""

    def __init__(self, script: Script = default_script) -> None:
        self.script = script
        self.made: dict[str, list[FakeConversation]] = {}

    def __call__(self, device_id: str) -> FakeConversation:
        c = FakeConversation(device_id, self.script)
        self.made.setdefault(device_id, []).append(c)
        return c

    def of(self, device_id: str) -> FakeConversation:
        return self.made[device_id][-1]


def llm_error() -> BackendError:
    return BackendError("stream cut", notice=FakeConversation.NOTICE, backend="llm")


# --- the device ------------------------------------------------------------------------------


def name(event: Any) -> str:
    return event if isinstance(event, str) else next(iter(event))


class Device:
    """A device-protocol client over a real WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, addr: str, device_id: str, path: str = "/ws/", **flags: bool) -> Device:
        query = "&".join(f"{k}={'true' if v else 'false'}" for k, v in flags.items())
        url = f"ws://{addr}{path}{device_id}" + (f"?{query}" if query else "")
        return cls(await connect(url, max_size=2**22))

    async def recv_bytes(self, timeout: float = 20) -> bytes:
        """The next binary frame as it came over the wire."""
        msg = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(msg, bytes), f"text frame from the server: {msg!r}"
        return msg

    async def recv(self, timeout: float = 20) -> Any:
        return decode_event(await self.recv_bytes(timeout))

    async def until_bytes(self, last: bytes, timeout: float = 30) -> list[bytes]:
        """Raw frames up to and including the first one equal to ``last``."""
        frames = []
        while True:
            frames.append(await self.recv_bytes(timeout))
            if frames[-1] == last:
                return frames

    async def until(self, last: str = "EndResponse", timeout: float = 30) -> list[Any]:
        """Events up to and including the first one named ``last``."""
        events = []
        while True:
            ev = await self.recv(timeout)
            events.append(ev)
            if name(ev) == last:
                return events

    async def command(self, event: str, **fields: Any) -> None:
        import json

        await self.ws.send(json.dumps({"event": event, **fields}))

    async def audio(self, pcm: bytes, frame: int = FRAME_BYTES) -> None:
        for i in range(0, len(pcm), frame):
            await self.ws.send(pcm[i : i + frame])

    async def close(self) -> None:
        await self.ws.close()


# --- segmenter -------------------------------------------------------------------------------

_WESTERN = ".!?;"
_CJK = "。！？；"


class SentenceSegmenter:
    """Test segmenter: one segment per sentence (orchestration tests do not depend on the
    docs/protocol.md#segments grouping, which tests/test_splitter.py covers)."""

    """One segment per sentence: a CJK terminator or a newline ends one at once; ``. ! ? ;``
    end one only when whitespace follows (so ``3.14`` and ``example.com`` stay whole)."""

    def __init__(self) -> None:
        self._buf: list[str] = []
        self._pending_end = False  # the last char was a western terminator

    def feed(self, delta: str) -> list[str]:
        out: list[str] = []
        for c in delta:
            if self._pending_end and c.isspace():
                self._emit(out)
                self._pending_end = False
                if c != "\n":
                    continue
            self._pending_end = c in _WESTERN
            self._buf.append(c)
            if c in _CJK or c == "\n":
                self._emit(out)
                self._pending_end = False
        return out

    def finish(self) -> list[str]:
        out: list[str] = []
        self._emit(out)
        self._pending_end = False
        return out

    def _emit(self, out: list[str]) -> None:
        text = "".join(self._buf).strip()
        self._buf.clear()
        if text:
            out.append(text)

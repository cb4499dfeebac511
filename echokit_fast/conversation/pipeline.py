"""One answer: LLM text -> segments -> TTS (several at once) -> the device, in order
(docs/protocol.md#speech-synthesis).

The conversation's streamed text goes through a segmenter; each completed segment is
synthesised as soon as it exists, up to ``max_parallel`` segments at a time *per session*
(not a global FIFO shared by all devices, docs/compatibility.md#sessions-and-the-tts-queue): a
segment holds its slot from the start of its synthesis until it has been delivered, and each
segment's queue holds at most :data:`QUEUE_CHUNKS` of its TTS chunks (the synthesis waits while
it is full), so what waits in memory is bounded even when the device reads slower than the TTS
speaks. Delivery is strictly in order, through the
device's :class:`~echokit_fast.conversation.device.DeviceOutput`: ``segment_start(text)``, the
segment's audio as its TTS yields it (at ``sample_rate``, the device's 16 kHz by default),
``segment_end()``; the next segment's audio (often already synthesised) follows at once. A
``SpeakNow`` item ends the text before it (the segmenter is finished and a fresh one started)
and is spoken as its own segment. ``Display``, ``Notify`` and ``Choose`` items end the text
before them too and reach the device in their place among the segments (``display``,
``notify``, ``choose``: its answer is set on the item).

Failures: a :class:`~echokit_fast.backends.base.BackendError` of the conversation stops reading
the answer; what it sent until then is still spoken (the segmenter is flushed), then
:class:`TurnFailed` is raised. A TTS failure ends the segment (its audio so far,
``segment_end``) and raises :class:`TurnFailed` at once; the rest of the answer is dropped.
Cancellation stops everything; nothing started here outlives :meth:`ReplyPipeline.run`.

Held (``hold``, the speculative reply of :mod:`.speculative`): the answer is read and its first
segments synthesised as usual, but delivery starts only once ``hold`` is set; until then what
waits is bounded as above (``max_parallel`` segments of at most :data:`QUEUE_CHUNKS` chunks, and
the text read so far, at most ``max_answer_chars``).

Bounds (``[limits]``, the README's table), each a failure like the others: the whole answer
must be read within ``answer_s`` (tool calls included) and is read up to ``max_answer_chars``
characters (what fits is spoken, then :data:`ANSWER_TOO_LONG`); one segment's synthesis may keep
the pipeline waiting ``segment_s`` in all (the time spent waiting for the TTS's next chunk,
whatever it sends; time the delivery holds it back is not counted). An answer none of whose
segments produced any audio (a voice that cannot say the text, a TTS answering an empty body) is
the failure :data:`NO_AUDIO`, spoken like other notices; an answer that brought nothing at all
(no text, no item: an LLM's empty completion) is :data:`NO_ANSWER`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np

from echokit_fast.backends import http
from echokit_fast.backends.base import (
    BackendError,
    Choose,
    Conversation,
    Display,
    Notify,
    Reply,
    Speaker,
    SpeakNow,
)
from echokit_fast.conversation.device import SAMPLE_RATE, DeviceOutput
from echokit_fast.conversation.segmenter import SegmenterFactory
from echokit_fast.conversation.splitter import MAX_SEGMENT_BYTES, split_at_word
from echokit_fast.conversation.trace import TurnTrace

__all__ = [
    "ANSWER_TOO_LONG",
    "GENERIC_NOTICE",
    "NO_ANSWER",
    "NO_AUDIO",
    "ReplyPipeline",
    "TurnFailed",
    "aclosing_iter",
]

log = logging.getLogger("echokit_fast.device")

GENERIC_NOTICE = "Sorry, something went wrong. Please try again."
#: said after the part of an answer over ``max_answer_chars``
ANSWER_TOO_LONG = "The answer is too long to say in full."
#: an answer whose segments all produced no audio
NO_AUDIO = "The speech synthesizer produced no audio."
#: an answer without any text or item
NO_ANSWER = "The language model gave no answer. Please try again."


class TurnFailed(Exception):
    """A backend failed during a turn; ``notice`` is for the user, ``stage`` is asr/llm/tts
    (or what else ended the turn); ``spoken``: whether the notice is spoken (by default not
    when the TTS is what failed)."""

    def __init__(
        self, notice: str, stage: str, detail: str = "", *, spoken: bool | None = None
    ) -> None:
        super().__init__(detail or notice)
        self.notice = notice
        self.stage = stage
        self.spoken = stage != "tts" if spoken is None else spoken

    @classmethod
    def of(cls, exc: BaseException, stage: str) -> TurnFailed:
        if isinstance(exc, TurnFailed):
            return exc
        if isinstance(exc, BackendError):
            log.warning("%s backend failed: %s", stage, exc)
            return cls(exc.notice or GENERIC_NOTICE, stage, str(exc))
        log.error("%s backend raised %r", stage, exc, exc_info=exc)
        return cls(GENERIC_NOTICE, stage, repr(exc))


@asynccontextmanager
async def aclosing_iter(it: AsyncIterator[Any]):
    """Like ``contextlib.aclosing`` but for any async iterator (``aclose`` if it has one), so
    a cancelled stream's generator is closed at once, not at garbage collection."""
    try:
        yield it
    finally:
        close = getattr(it, "aclose", None)
        if close is not None:
            await close()


def as_pcm(chunk: Any) -> np.ndarray:
    """A TTS chunk as 1-D float32 (the Speaker contract; other float/int16 arrays converted)."""
    a = np.asarray(chunk)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / np.float32(32768.0)
    elif a.dtype != np.float32:
        a = a.astype(np.float32)
    return np.ascontiguousarray(a.reshape(-1))


_END = object()
#: TTS chunks one segment's queue holds (32 s of the HTTP speakers' 0.5 s chunks)
QUEUE_CHUNKS = 64


#: reply items shown in their place among the segments, not spoken
Shown = Display | Notify | Choose


class _Job:
    __slots__ = ("queue", "shown", "task", "text")

    def __init__(self, text: str, shown: Shown | None = None) -> None:
        self.text = text
        self.shown = shown
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_CHUNKS)
        self.task: asyncio.Task[None] | None = None


class ReplyPipeline:
    def __init__(
        self,
        *,
        conversation: Conversation,
        speaker: Speaker,
        segmenter_factory: SegmenterFactory,
        out: DeviceOutput,
        trace: TurnTrace,
        max_parallel: int = 3,
        sample_rate: int = SAMPLE_RATE,
        answer_s: float | None = None,
        max_answer_chars: int | None = None,
        segment_s: float | None = None,
        hold: asyncio.Event | None = None,
    ) -> None:
        self.conversation = conversation
        self.speaker = speaker
        self.segmenter_factory = segmenter_factory
        self.out = out
        self.trace = trace
        self.max_parallel = max(1, int(max_parallel))
        self.sample_rate = sample_rate
        self.answer_s = answer_s
        self.max_answer_chars = max_answer_chars
        self.segment_s = segment_s
        #: when set, nothing reaches ``out`` until this is set (the LLM and TTS run meanwhile)
        self.hold = hold
        self.segments = 0
        self._heard = False  # some audio of the answer was delivered
        self._shown = 0  # items shown (Display, Notify, Choose)
        self._seg = segmenter_factory()
        self._pending: deque[str | Shown] = deque()
        self._jobs: deque[_Job] = deque()
        self._llm_done = False
        self._error: TurnFailed | None = None
        self._wake = asyncio.Event()

    async def run(self, user_text: str) -> int:
        """Speak the answer to ``user_text``; returns the number of segments spoken."""
        return await self.run_items(self.conversation.reply(user_text))

    async def run_items(self, items: AsyncIterator[Reply]) -> int:
        """Deliver a reply's ``items`` (the answer to the user, or a turn of the conversation's
        own); returns the number of segments spoken."""
        producer = asyncio.create_task(self._produce(items), name="echokit-device-llm")
        try:
            await self._deliver()
            await producer
        finally:
            tasks = [producer, *(j.task for j in self._jobs if j.task is not None)]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._error is not None:
            raise self._error
        if self.segments and not self._heard:
            raise TurnFailed(NO_AUDIO, "tts", "no segment of the answer had audio", spoken=True)
        if not self.segments and not self._shown:
            raise TurnFailed(NO_ANSWER, "llm", "the answer was empty")
        return self.segments

    # -- LLM -> segments ---------------------------------------------------------------

    async def _produce(self, items: AsyncIterator[Reply]) -> None:
        try:
            async with asyncio.timeout(self.answer_s):
                await self._read(items)
        except TimeoutError:
            self._error = TurnFailed(
                http.LLM.timeout, "llm", f"the answer was not read within {self.answer_s} s"
            )
        except Exception as exc:  # (not a cancellation: that ends everything)
            self._error = TurnFailed.of(exc, "llm")
        # what was received is spoken, the answer complete or not
        for s in self._seg.finish():
            self._schedule(s)
        self._llm_done = True
        self._wake.set()

    async def _read(self, items: AsyncIterator[Reply]) -> None:
        chars = 0
        cap = self.max_answer_chars
        async with aclosing_iter(items) as stream:
            async for item in stream:
                if isinstance(item, SpeakNow | Shown):
                    self.trace.mark("llm_first")
                    for s in self._seg.finish():
                        self._schedule(s)
                    self._seg = self.segmenter_factory()
                    if isinstance(item, Shown):
                        self._pending.append(item)
                        self._fill()
                        self._wake.set()
                    elif item.text.strip():
                        self._schedule(item.text.strip())
                elif item:
                    self.trace.mark("llm_first")
                    over = cap is not None and chars + len(item) > cap
                    if over:
                        item = item[: cap - chars]
                    chars += len(item)
                    for s in self._seg.feed(item):
                        self._schedule(s)
                    if over:
                        raise TurnFailed(ANSWER_TOO_LONG, "llm", f"an answer over {cap} characters")

    def _schedule(self, text: str) -> None:
        # every segment is one bounded TTS request and StartAudio, whatever made it (a custom
        # segmenter, a tool's call_mcp_message): a longer one is cut at word boundaries
        rest = text.strip()
        if not rest:
            return
        while rest:
            head, rest = split_at_word(rest, MAX_SEGMENT_BYTES)
            rest = rest.lstrip()
            if head.strip():
                self._pending.append(head.strip())
        self._fill()
        self._wake.set()

    def _fill(self) -> None:
        while self._pending and len(self._jobs) < self.max_parallel:
            item = self._pending.popleft()
            if isinstance(item, str):
                job = _Job(item)
                job.task = asyncio.create_task(self._synth(job), name="echokit-device-tts")
            else:
                job = _Job("", item)
            self._jobs.append(job)

    # -- TTS ---------------------------------------------------------------------------

    async def _synth(self, job: _Job) -> None:
        left = self.segment_s  # seconds the TTS may still keep this segment waiting
        try:
            async with aclosing_iter(
                self.speaker.speak(job.text, sample_rate=self.sample_rate)
            ) as it:
                # One scope for the segment, its deadline set to what is left while the speaker
                # is awaited and lifted while the queue waits for playback: a fail_after per
                # chunk (tens a segment) cost ~14 us of the event loop each, this ~4 us.
                with anyio.CancelScope() as scope:
                    while True:
                        start = anyio.current_time()
                        if left is not None:
                            scope.deadline = start + left
                        try:
                            chunk = await it.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            scope.deadline = math.inf
                        if left is not None:
                            left -= anyio.current_time() - start
                        pcm = as_pcm(chunk)
                        if len(pcm):
                            self.trace.mark("tts_first")
                            await job.queue.put(pcm)
                if scope.cancelled_caught:
                    raise TimeoutError
            await job.queue.put(_END)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            detail = f"segment {job.text[:40]!r} not synthesised within {self.segment_s} s"
            await job.queue.put(TurnFailed(http.TTS.timeout, "tts", detail))
        except Exception as exc:
            await job.queue.put(TurnFailed.of(exc, "tts"))

    # -- delivery ----------------------------------------------------------------------

    async def _deliver(self) -> None:
        if self.hold is not None:
            await self.hold.wait()
        while True:
            if not self._jobs:
                if self._llm_done and not self._pending:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._play(self._jobs[0])
            self._jobs.popleft()
            self._fill()

    async def _play(self, job: _Job) -> None:
        out = self.out
        if job.shown is not None:
            await self._show(job.shown)
            return
        await out.segment_start(job.text)
        self.segments += 1
        while True:
            item = await job.queue.get()
            if item is _END:
                break
            if isinstance(item, TurnFailed):
                self._sent(await out.segment_end())
                raise item
            self._heard = True
            self._sent(await out.audio(item))
        self._sent(await out.segment_end())

    async def _show(self, item: Shown) -> None:
        self._shown += 1
        if isinstance(item, Display):
            await self.out.display(item.text)
        elif isinstance(item, Notify):
            await self.out.notify(item.text)
        else:
            index = await self.out.choose(item.message, list(item.items))
            if not item.answer.done():
                item.answer.set_result(index)

    def _sent(self, packets: int) -> None:
        if packets:
            self.trace.mark("first_frame")
            self.trace.set("last_frame")

"""The turn of the live layouts (docs/protocol.md#live-layouts): a live model (a
:class:`~echokit_fast.backends.base.LiveConversation`, Gemini Live) hears the user's audio while
they speak and answers with its own speech, or with text that the Speaker speaks.

The session (:mod:`.session`) listens as in the pipeline -- its turn detector ends the utterance
(the firmware never sends ``Submit``), or the device's ``Submit`` does -- but instead of
transcribing the utterance it streams it to the model through a :class:`LiveInput`, and the turn
is :func:`answer`:

* the model's transcript of the user's audio, as the final transcript, before the answer;
* audio answers, one segment: ``segment_start`` with the transcript of the model's speech known
  by then (it comes a little after the speech: up to :data:`HOLD_S` of speech waits for its
  first words), the speech, ``segment_end``;
* text answers: the text through the segmenter and the parallel TTS of
  :class:`~echokit_fast.conversation.pipeline.ReplyPipeline`, as an LLM's answer;
* the model ending the conversation (:class:`~echokit_fast.backends.base.Goodbye`):
  ``goodbye()`` after what was spoken.

A failure of the model is a :class:`~echokit_fast.conversation.pipeline.TurnFailed` (stage
``live``; a text answer's, as the pipeline reports an LLM's), after an audio segment already
begun is ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from echokit_fast.backends.base import Goodbye, HeardPiece, LiveConversation, Pcm, Said, Speaker
from echokit_fast.conversation.device import SAMPLE_RATE, DeviceGone, DeviceOutput
from echokit_fast.conversation.pipeline import ReplyPipeline, TurnFailed, aclosing_iter
from echokit_fast.conversation.segmenter import SegmenterFactory
from echokit_fast.conversation.trace import TurnTrace

__all__ = ["HOLD_S", "LiveInput", "answer"]

log = logging.getLogger("echokit_fast.device")

#: seconds of an audio answer held back while its transcript has not begun
HOLD_S = 1.0


class LiveInput:
    """One utterance on its way to the live model: ``start`` at once, then every ``push`` in
    order, then ``finish``; sent by a task of its own, so the device's input never waits for
    the model's socket (the audio queues while it connects)."""

    def __init__(self, live: LiveConversation) -> None:
        self._live = live
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._send(), name="echokit-live-input")
        # a failure is the turn's to report; one nobody waits for is not an error
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def push(self, pcm16: bytes) -> None:
        self._queue.put_nowait(pcm16)

    def finish(self) -> None:
        """The utterance is over: the model answers once the audio before it is sent."""
        self._queue.put_nowait(None)

    def cancel(self) -> None:
        self._task.cancel()

    async def sent(self) -> None:
        """Return once the whole utterance is sent; TurnFailed when it could not be."""
        try:
            await self._task
        except Exception as exc:
            raise TurnFailed.of(exc, "live") from exc

    async def _send(self) -> None:
        await self._live.start()
        while (pcm16 := await self._queue.get()) is not None:
            await self._live.hear(pcm16)
        await self._live.finish()


async def answer(
    live: LiveConversation,
    out: DeviceOutput,
    trace: TurnTrace,
    *,
    heard: LiveInput | None = None,
    text: str = "",
    speaker: Speaker | None,
    segmenter_factory: SegmenterFactory,
    max_parallel: int,
) -> int:
    """Give the model the user's turn -- the utterance ``heard``, or the typed ``text`` (already
    shown as the transcript) -- and deliver its answer through ``out``. Returns the number of
    segments spoken."""
    if heard is not None:
        await heard.sent()
    else:
        try:
            await live.write(text)
        except Exception as exc:
            raise TurnFailed.of(exc, "live") from exc
    reply = _Reply(live, out, trace, shown=heard is None)
    if live.text_answers:
        if speaker is None:
            raise RuntimeError("text answers need a Speaker")
        pipeline = ReplyPipeline(
            conversation=reply,  # a Conversation as far as the pipeline goes: reply()
            speaker=speaker,
            segmenter_factory=segmenter_factory,
            out=out,
            trace=trace,
            max_parallel=max_parallel,
        )
        segments = await pipeline.run(text)
    else:
        segments = await reply.speak()
    if reply.bye:
        await out.goodbye()
    elif not segments and not reply.transcript:
        trace.outcome = "empty"
    return segments


class _Reply:
    """One answer of the model, read once: as text deltas (:meth:`reply`, the pipeline's
    Conversation) or spoken as it is (:meth:`speak`)."""

    def __init__(self, live: LiveConversation, out: DeviceOutput, trace: TurnTrace, *, shown: bool):
        self.live = live
        self.out = out
        self.trace = trace
        self.transcript = ""
        self.bye = False
        self._heard: list[str] = []
        self._shown = shown

    async def _events(self) -> AsyncIterator[Said | Pcm]:
        """The answer's text and speech; the user's transcript is shown before the first."""
        async with aclosing_iter(self.live.answer()) as events:
            async for event in events:
                if isinstance(event, HeardPiece):
                    if self._shown:
                        log.debug("late piece of the user's transcript dropped: %r", event.text)
                    else:
                        self._heard.append(event.text)
                    continue
                if isinstance(event, Goodbye):
                    self.bye = True
                    break
                await self._show()
                self.trace.mark("llm_first")
                yield event
        await self._show()

    async def _show(self) -> None:
        if self._shown:
            return
        self._shown = True
        self.transcript = "".join(self._heard).strip()
        if self.transcript:
            await self.out.transcript(self.transcript, final=True)
            self.trace.mark("asr_done")

    async def reply(self, user_text: str) -> AsyncIterator[str]:
        """Text answers: the answer's text, for the pipeline's segmenter."""
        async with aclosing_iter(self._events()) as events:
            async for event in events:
                if isinstance(event, Said) and event.text:
                    yield event.text

    async def speak(self) -> int:
        """Audio answers: one segment (see the module docstring); returns how many (0 or 1)."""
        out = self.out
        said: list[str] = []
        held: list[Pcm] = []
        started = False

        async def begin() -> None:
            nonlocal started
            started = True
            await out.segment_start("".join(said).strip())
            for pcm in held:
                self._sent(await out.audio(pcm))
            held.clear()

        try:
            async with aclosing_iter(self._events()) as events:
                async for event in events:
                    if isinstance(event, Said):
                        said.append(event.text)
                        if not started and "".join(said).strip():
                            await begin()
                        continue
                    self.trace.mark("tts_first")
                    if started:
                        self._sent(await out.audio(event))
                        continue
                    held.append(event)
                    if sum(map(len, held)) >= HOLD_S * SAMPLE_RATE:
                        await begin()
            if held and not started:
                await begin()
        except DeviceGone:
            raise
        except Exception as exc:
            failure = TurnFailed.of(exc, "live")
            if started:
                self._sent(await out.segment_end())
            raise failure from exc
        if not started:
            return 0
        self._sent(await out.segment_end())
        return 1

    def _sent(self, packets: int) -> None:
        if packets:
            self.trace.mark("first_frame")
            self.trace.set("last_frame")

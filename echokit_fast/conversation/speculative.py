"""The speculative reply (docs/architecture.md#speculative-reply): the answer to a round's
transcript, started while the user is silent after a pause but before the turn detector has
ended the turn.

A :class:`Speculation` runs the conversation's reply through a :class:`~.pipeline.ReplyPipeline`
whose delivery is held (``hold``): the LLM is read and the first segments are synthesised, but
nothing reaches the device. When the turn ends on the same round and the same transcript, the
turn *adopts* it (:meth:`Speculation.adopt`): the turn's own events (end of speech, the final
transcript) are already out, the held delivery starts, and the turn's trace takes the stamps
the speculation recorded. Otherwise it is *dropped* (:meth:`Speculation.cancel`): the task is
cancelled (the LLM stream closed, the TTS stopped) and the conversation rewound
(:class:`~echokit_fast.backends.base.Rewindable`) to what it was before, so the history keeps
neither the user message nor any part of the answer. Until adoption the reply does nothing
outside the conversation: its tool calls wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from echokit_fast.backends.base import Rewindable
from echokit_fast.conversation.pipeline import ReplyPipeline
from echokit_fast.conversation.trace import TurnTrace

__all__ = ["Speculation"]

#: makes a speculation's pipeline from its trace and the event that holds its delivery
PipelineFor = Callable[[TurnTrace, asyncio.Event], ReplyPipeline]


class Speculation:
    """The held answer to ``text`` (the transcript of ``round_task``, a round of the current
    utterance) from ``conversation``; ``pipeline_for(trace, hold)`` makes its pipeline. It
    starts once the speculations in ``earlier`` (dropped ones) have finished rewinding."""

    def __init__(
        self,
        text: str,
        round_task: asyncio.Task[tuple[str, BaseException | None]],
        conversation: Rewindable,
        pipeline_for: PipelineFor,
        *,
        device: str,
        earlier: list[asyncio.Task[int]],
    ) -> None:
        self.text = text
        self.round_task = round_task
        self.conversation = conversation
        self.adopted = asyncio.Event()
        self._trace = TurnTrace(device, 0)
        self._pipeline = pipeline_for(self._trace, self.adopted)
        self.task = asyncio.create_task(self._run(earlier), name="echokit-device-speculative")

    async def _run(self, earlier: list[asyncio.Task[int]]) -> int:
        if earlier:
            await asyncio.wait(earlier)
        state = self.conversation.speculate(self.adopted)
        try:
            return await self._pipeline.run_items(self.conversation.reply(self.text))
        except BaseException:
            if not self.adopted.is_set():
                self.conversation.rewind(state)
            raise

    def cancel(self) -> None:
        """Drop it (the task ends after rewinding the conversation, unless it was adopted)."""
        self.task.cancel()

    async def adopt(self, trace: TurnTrace) -> int:
        """The turn takes it: ``trace`` gets the stages recorded so far (and those to come),
        the held delivery starts; returns the segments spoken (raises what the pipeline
        raises). Cancelling the caller cancels it."""
        for stage, t in self._trace.stamps.items():
            trace.mark(stage, t)
        self._pipeline.trace = trace
        self.adopted.set()
        return await self.task

"""Silero VAD probabilities for many device streams, one model call for all of them.

The turn detectors of the device server (:mod:`echokit_fast.turn`) need, for each piece of a
device's microphone audio, the speech probability of every 512-sample window in it. Run per
device, that is one worker-thread hop and one ``session.run`` per piece and device: with 100
xiaozhi boards sending 60 ms packets, ~1,700 small inference calls a second, the largest share
of the server's CPU. A :class:`VadPool` runs them together:

* :meth:`PooledStream.probabilities` pushes the piece's whole windows into the stream's slot of
  one :class:`~echokit_fast.backends.vad.silero.VadBatcher` (the rest of a window waits for the
  next piece, as in a :class:`~echokit_fast.backends.vad.silero.VadStream`), then waits until
  a step has run them;
* a step is :meth:`VadBatcher.step` in a worker thread: one ``session.run`` over every stream
  with windows waiting. No task of its own: the first caller that finds no step running starts
  one; pieces that arrive while it runs wait for the next, which the first of their callers
  starts when it ends. So an idle server runs nothing, one device gets its answer after one
  step as before, and under load each step serves every device that spoke meanwhile.

The probabilities equal those of one VadStream per device (the batched model, tested to 1e-5).
A stream is closed by :meth:`PooledStream.close` or, when its detector is dropped without it,
once it is garbage (its slot is then freed before the next step). A failed step raises its
error in every caller waiting on it; the streams stay usable.

Why not the realtime VAD engine (:class:`echokit_fast.api.vad.RealtimeVad`): that one answers
VADIterator events to WebSocket listeners with per-connection backlog limits and a stepping
task; a detector only needs each piece's probabilities back, in order, from one call.
"""

from __future__ import annotations

import asyncio
import collections
import weakref

import numpy as np

from echokit_fast.backends.vad.silero import BatchedStream, SileroVad, StepResult, VadBatcher

__all__ = ["PooledStream", "VadPool"]

#: bytes of one 512-sample 16 kHz PCM16 window
WINDOW_BYTES = 2 * 512


class VadPool:
    """One :class:`VadBatcher` over `model` (16 kHz) shared by the streams it opens."""

    def __init__(self, model: SileroVad, *, max_windows_per_step: int = 8) -> None:
        self._batcher = VadBatcher(model, max_windows_per_step=max_windows_per_step)
        self._streams: weakref.WeakValueDictionary[int, PooledStream] = (
            weakref.WeakValueDictionary()
        )
        #: the slots of streams dropped without close(), freed before the next step
        self._dropped: collections.deque[BatchedStream] = collections.deque()
        self._step: asyncio.Task[None] | None = None
        #: steps run, and the most streams one step served (a bench reads them)
        self.steps = 0
        self.max_streams_per_step = 0

    def __len__(self) -> int:
        """Streams open."""
        return len(self._batcher)

    def open(self, *, threshold: float = 0.5, neg_threshold: float | None = None) -> PooledStream:
        """A new stream (the VADIterator parameters only matter to its own events, which a
        detector does not read; its probabilities are the model's)."""
        slot = self._batcher.open(threshold=threshold, neg_threshold=neg_threshold)
        stream = PooledStream(self, slot)
        self._streams[slot.id] = stream
        # (the slot, not the stream: the finalizer must not keep the stream alive; ids are
        # reused once freed, so close() detaches it)
        stream._finalizer = weakref.finalize(stream, self._dropped.append, slot)
        return stream

    def _running_step(self) -> asyncio.Task[None]:
        step = self._step
        if step is None or step.done():
            step = self._step = asyncio.get_running_loop().create_task(
                self._run_step(), name="vad-pool-step"
            )
        return step

    async def _run_step(self) -> None:
        while self._dropped:
            self._dropped.popleft().close()
        results = await asyncio.to_thread(self._batcher.step)
        self.steps += 1
        self.max_streams_per_step = max(self.max_streams_per_step, len(results))
        for sid, result in results.items():
            stream = self._streams.get(sid)
            if stream is not None:
                stream._take(result)


class PooledStream:
    """One device utterance's slot in a :class:`VadPool` (one caller at a time)."""

    __slots__ = ("__weakref__", "_carry", "_expected", "_finalizer", "_got", "_pool", "_slot", "id")

    def __init__(self, pool: VadPool, slot: BatchedStream) -> None:
        self._pool = pool
        self._slot = slot
        self.id = slot.id
        self._finalizer: weakref.finalize | None = None
        self._carry = bytearray()  # the start of a window not whole yet
        self._expected = 0  # windows pushed whose probabilities have not been returned
        self._got: list[np.ndarray] = []

    async def probabilities(self, pcm16: bytes) -> list[float]:
        """The speech probability of each window that `pcm16` (16 kHz mono PCM16 LE, after
        what came before) completes, in order; [] when it completes none. (A call cancelled
        while it waits leaves its windows' probabilities to the next call.)"""
        carry = self._carry
        carry += pcm16
        whole = len(carry) // WINDOW_BYTES * WINDOW_BYTES
        if whole:
            self._slot.push(bytes(carry[:whole]))
            del carry[:whole]
            self._expected += whole // WINDOW_BYTES
        # The step running now may have taken its windows before this push; the next one,
        # started after it, runs every window pushed by then.
        for _ in range(2):
            if self._received() >= self._expected:
                break
            try:
                # shielded: a caller cancelled (a barge-in) never cancels the others' step
                await asyncio.shield(self._pool._running_step())
            except Exception:
                # the model failed: what was buffered is dropped, the stream starts afresh
                self._slot.reset()
                self._carry.clear()
                self._expected, self._got = 0, []
                raise
        else:
            if self._received() < self._expected:  # pragma: no cover - a bug in the batcher
                raise RuntimeError(f"VAD stream {self.id}: windows pushed were not run")
        got, self._got = self._got, []
        self._expected = 0
        return np.concatenate(got).tolist() if got else []

    def _received(self) -> int:
        return sum(len(p) for p in self._got)

    def _take(self, result: StepResult) -> None:
        self._got.append(result.probabilities)

    def close(self) -> None:
        """Free the slot now (idempotent)."""
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is None or finalizer.detach() is None:
            return  # closed already, or being freed as garbage
        self._pool._streams.pop(self.id, None)
        self._slot.close()

"""The answer's audio on its way to a xiaozhi board (docs/xiaozhi.md#audio): the engine's
16 kHz speech resampled to the rate the server hello announced, cut into Opus packets of
60 ms, and paced on the board's playback clock.

The board queues at most 40 packets (2.4 s) and drops, without a word, any packet that
arrives with its queue full; it plays one packet per 60 ms. So what is sent must stay close
to what it plays: :class:`Pacer` keeps a virtual playback clock (when the board will have
played everything sent), lets the first ``LEAD_FRAMES`` packets (300 ms) go at once and
then one packet per frame as the clock advances, so the board never holds more than 300 ms.
After a pause (the next segment still being synthesised, say) the clock starts again from
now: nothing is sent in a burst to catch up. The board flushes its queue at every ``tts
start``, and so does the pacer (:meth:`Pacer.restart`).
"""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt

from echokit_fast.audio import DOWNLINK_OPUS_COMPLEXITY, OpusEncoder, Resampler
from echokit_fast.conversation.device import SAMPLE_RATE
from echokit_fast.devices.xiaozhi.protocol import FRAME_MS

__all__ = ["LEAD_FRAMES", "Pacer", "Speech"]

#: packets that may wait in the board's queue beyond the one playing
LEAD_FRAMES = 5


class Speech:
    """One turn's downlink: engine PCM in, whole Opus packets out. A segment's last packet is
    zero-padded to a whole frame (the board cannot decode a longer or a partial one)."""

    def __init__(self, sample_rate: int) -> None:
        self._enc = OpusEncoder(sample_rate, FRAME_MS, DOWNLINK_OPUS_COMPLEXITY)
        self._rs = Resampler(SAMPLE_RATE, sample_rate) if sample_rate != SAMPLE_RATE else None

    @property
    def frame_size(self) -> int:
        return self._enc.frame_size

    def push(self, pcm: npt.NDArray[np.float32]) -> list[bytes]:
        if self._rs is not None:
            pcm = self._rs.process(pcm)
        return self._enc.push(pcm)

    def end_segment(self) -> list[bytes]:
        """The rest of the segment's audio."""
        packets = self._enc.push(self._rs.flush()) if self._rs is not None else []
        return packets + self._enc.flush()


class Pacer:
    """The board's playback clock (see the module docstring); times are the running loop's."""

    def __init__(self, frame_s: float = FRAME_MS / 1000, lead_frames: int = LEAD_FRAMES) -> None:
        self._frame = frame_s
        self._ahead = lead_frames * frame_s  # the most audio the board holds after a send
        self._end = 0.0  # when the board will have played everything sent

    def restart(self) -> None:
        """The board flushed its queue."""
        self._end = 0.0

    async def slot(self) -> None:
        """Wait until the next packet may go; it is counted as sent."""
        loop = asyncio.get_running_loop()
        wait = self._end + self._frame - self._ahead - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._end = max(self._end, loop.time()) + self._frame

    async def drained(self) -> None:
        """Wait until the board has played everything sent."""
        wait = self._end - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

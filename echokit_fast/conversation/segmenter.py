"""Splitting the streamed LLM answer into speakable segments.

The device server only needs an object with ``feed(delta) -> list[str]`` (the segments the
new text completed) and ``finish() -> list[str]`` (the rest, at the end of the answer); a
*segmenter factory* makes one per answer. The default is the docs/protocol.md#segments splitter and
grouping (:class:`echokit_fast.conversation.splitter.SegmentGrouper`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Segmenter", "SegmenterFactory"]


@runtime_checkable
class Segmenter(Protocol):
    def feed(self, delta: str) -> list[str]:
        """Add streamed text; return the segments it completed (trimmed, non-empty)."""
        ...

    def finish(self) -> list[str]:
        """End of the answer: return what is left (trimmed, non-empty)."""
        ...


SegmenterFactory = Callable[[], Segmenter]

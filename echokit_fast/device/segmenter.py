"""Splitting the streamed LLM answer into speakable segments.

The device server only needs an object with ``feed(delta) -> list[str]`` (the segments the
new text completed) and ``finish() -> list[str]`` (the rest, at the end of the answer); a
*segmenter factory* makes one per answer. :class:`SentenceSegmenter` is the trivial default
(one segment per sentence); the real splitter (spec §5.8: quotes, decimals, grouping) plugs in
through the same two methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Segmenter", "SegmenterFactory", "SentenceSegmenter"]


@runtime_checkable
class Segmenter(Protocol):
    def feed(self, delta: str) -> list[str]:
        """Add streamed text; return the segments it completed (trimmed, non-empty)."""
        ...

    def finish(self) -> list[str]:
        """End of the answer: return what is left (trimmed, non-empty)."""
        ...


SegmenterFactory = Callable[[], Segmenter]

_WESTERN = ".!?;"
_CJK = "。！？；"


class SentenceSegmenter:
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

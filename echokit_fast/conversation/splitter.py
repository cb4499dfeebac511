"""Split streamed LLM text into speakable TTS segments, exactly as echokit_server
(docs/protocol.md#segments).

Two layers:

* :class:`SentenceSplitter` cuts characters into sentences (English and Chinese terminators,
  decimals and dotted words such as ``3.14``, ``e.g.x`` and ``example.com`` kept whole, quotes,
  newlines);
* :class:`SegmentGrouper` releases those sentences as TTS segments: the **first** completed
  sentence alone (so speech starts early), then groups of queued sentences concatenated while
  shorter than 50 UTF-8 bytes, at most one segment per network read; at the end of the stream
  the rest (the unterminated tail included) in groups closed as soon as they reach 50 bytes.

Incremental use, one :meth:`SegmentGrouper.feed` per network read (one streamed delta)::

    grouper = SegmentGrouper()
    async for delta in stream:
        for segment in grouper.feed(delta):
            speak(segment)
    for segment in grouper.finish():
        speak(segment)

Every released segment is trimmed and never empty; one segment is one TTS request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar

__all__ = [
    "GROUP_MIN_BYTES",
    "SegmentGrouper",
    "SentenceSplitter",
    "speakable",
    "split_segments",
]

T = TypeVar("T")

#: a grouped segment grows while it is shorter than this many UTF-8 bytes
GROUP_MIN_BYTES = 50

_EN_TERMINATORS = frozenset(".!?;")
_ZH_TERMINATORS = frozenset("。！？；")
_BLANK_SKIPPED = frozenset(" \t\r")  # skipped while the buffer is empty (rule 2)
_CURLY_QUOTES = frozenset("“”")


class SentenceSplitter:
    """The character-level sentence splitter of docs/protocol.md#segments (rules 1-8).

    :meth:`push` feeds text and returns the sentences it completed (untrimmed: a sentence keeps
    the space that ended it); :meth:`finish` returns the remaining buffer as a last sentence
    (or nothing if it is whitespace-only) and resets the splitter. Whitespace-only sentences
    are never returned.
    """

    __slots__ = ("_buf", "_ect", "_ewt", "_in_quote", "_out", "_prev")

    def __init__(self) -> None:
        self._buf: list[str] = []
        self._in_quote = False
        self._prev = ""
        self._ewt = False  # ended with an English terminator
        self._ect = False  # ended with a Chinese terminator inside quotes
        self._out: list[str] = []

    def _emit(self) -> None:
        text = "".join(self._buf)
        self._buf.clear()
        if text.strip():
            self._out.append(text)

    def _char(self, c: str) -> None:
        # Rule 1: the previous character was an English terminator.
        if self._ewt:
            if c == " ":
                self._buf.append(c)
                if not self._in_quote:
                    self._emit()
                return  # EWT stays set
            if self._prev == ".":
                self._ewt = False  # 3.14, e.g.x, example.com: no split
            elif not self._in_quote:
                self._emit()
                self._ewt = False
            # inside quotes: EWT stays set until the closing quote (rule 5)
        # Rule 2: leading blanks are dropped.
        if c in _BLANK_SKIPPED and not self._buf:
            return
        # Rule 3: quotes.
        if c in _CURLY_QUOTES:
            c = '"'
        if c == '"':
            self._in_quote = not self._in_quote
        # Rule 4.
        self._buf.append(c)
        # Rule 5: a closing quote ends a quoted sentence.
        if c == '"' and not self._in_quote and (self._ewt or self._ect):
            self._emit()
            self._ewt = self._ect = False
        # Rule 6.
        if c == "\n":
            self._emit()
        # Rule 7.
        if c in _ZH_TERMINATORS:
            if self._in_quote:
                self._ect = True
            else:
                self._emit()
        # Rule 8.
        if c in _EN_TERMINATORS:
            self._ewt = True

    def push(self, text: str) -> list[str]:
        """Feed ``text``; return the sentences it completed, in order."""
        for c in text:
            self._char(c)
            self._prev = c
        out, self._out = self._out, []
        return out

    def finish(self) -> list[str]:
        """End of stream: the unterminated rest as a sentence (if not blank); resets."""
        self._emit()
        out = self._out
        self.__init__()
        return out


class SegmentGrouper:
    """The per-response grouping of docs/protocol.md#segments on top of a
    :class:`SentenceSplitter`."""

    __slots__ = ("_first_done", "_min_bytes", "_queue", "_splitter")

    def __init__(self, *, min_bytes: int = GROUP_MIN_BYTES) -> None:
        self._splitter = SentenceSplitter()
        self._queue: deque[str] = deque()
        self._first_done = False
        self._min_bytes = min_bytes

    def feed(self, delta: str) -> list[str]:
        """One network read: push ``delta``; return the segment it releases (0 or 1 items).

        The first completed sentence is released alone; later, the next queued sentence plus
        following queued sentences while the segment is shorter than ``min_bytes`` UTF-8
        bytes. Sentences left in the queue wait for a later read (or :meth:`finish`).
        """
        self._queue.extend(self._splitter.push(delta))
        if not self._queue:
            return []
        segment = self._queue.popleft()
        if self._first_done:
            while self._queue and len(segment.encode()) < self._min_bytes:
                segment += self._queue.popleft()
        self._first_done = True
        segment = segment.strip()
        return [segment] if segment else []

    def finish(self) -> list[str]:
        """End of stream: every queued sentence and the unterminated tail, grouped (each group
        closed as soon as it reaches ``min_bytes``). Resets the grouper."""
        self._queue.extend(self._splitter.finish())
        out: list[str] = []
        group = ""
        for sentence in self._queue:
            group += sentence
            if len(group.encode()) >= self._min_bytes:
                out.append(group)
                group = ""
        if group:
            out.append(group)
        self._queue.clear()
        self._first_done = False
        return [s for s in (g.strip() for g in out) if s]


def split_segments(deltas: list[str] | tuple[str, ...] | str) -> list[str]:
    """All segments of a whole response given as its sequence of network reads (deltas)."""
    if isinstance(deltas, str):
        deltas = [deltas]
    grouper = SegmentGrouper()
    out: list[str] = []
    for delta in deltas:
        out.extend(grouper.feed(delta))
    out.extend(grouper.finish())
    return out


async def speakable(items: AsyncIterable[str | T]) -> AsyncIterator[str | T]:
    """TTS segments of a conversation reply, in order.

    ``items`` is what :meth:`~echokit_fast.backends.base.Conversation.reply` yields: text deltas
    (grouped into segments here) and other items such as
    :class:`~echokit_fast.backends.base.SpeakNow`, which are passed through in order: the text
    before one is flushed first (so it is spoken before it), and the text after it starts a
    new response (its first sentence again goes alone).
    """
    grouper = SegmentGrouper()
    async for item in items:
        if isinstance(item, str):
            for segment in grouper.feed(item):
                yield segment
        else:
            for segment in grouper.finish():
                yield segment
            yield item
    for segment in grouper.finish():
        yield segment

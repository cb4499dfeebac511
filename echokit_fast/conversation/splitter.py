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

No segment is longer than ``MAX_SEGMENT_BYTES`` UTF-8 bytes (ours, the reference has no bound):
a sentence that grows past it is cut at its last word boundary within it (a word longer than
that is cut hard, never inside a character), and a group never grows past it. Nothing is lost:
the rest of the sentence goes on.

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

import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar

__all__ = [
    "GROUP_MIN_BYTES",
    "MAX_SEGMENT_BYTES",
    "SegmentGrouper",
    "SentenceSplitter",
    "cut_text",
    "speakable",
    "split_at_word",
    "split_segments",
]

T = TypeVar("T")

#: a grouped segment grows while it is shorter than this many UTF-8 bytes
GROUP_MIN_BYTES = 50
#: no segment (one TTS request, one ``StartAudio`` text) is longer than this many UTF-8 bytes
MAX_SEGMENT_BYTES = 1024

_LAST_WORD = re.compile(r"\S+\Z")


def split_at_word(text: str, max_bytes: int) -> tuple[str, str]:
    """``text`` as ``(head, rest)``, ``head`` at most ``max_bytes`` UTF-8 bytes: the longest
    start of ``text`` that ends at a word boundary (before white space, or the end), or, when
    the first word alone is longer, that word cut hard at ``max_bytes`` (never inside a
    character). ``head + rest == text``."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text, ""
    head = data[:max_bytes].decode("utf-8", errors="ignore")  # drops a split last character
    if not text[len(head)].isspace():  # the cut is inside a word: end before it
        before = _LAST_WORD.sub("", head)
        if before.strip():
            head = before
    return head, text[len(head) :]


def cut_text(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes at the last word boundary within them
    (:func:`split_at_word`), trailing white space dropped."""
    head, rest = split_at_word(text, max_bytes)
    return head.rstrip() if rest else text


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

    __slots__ = ("_buf", "_ect", "_ewt", "_in_quote", "_max", "_out", "_prev", "_size")

    def __init__(self, *, max_bytes: int = MAX_SEGMENT_BYTES) -> None:
        self._buf: list[str] = []
        self._size = 0  # UTF-8 bytes in _buf
        self._max = max_bytes
        self._in_quote = False
        self._prev = ""
        self._ewt = False  # ended with an English terminator
        self._ect = False  # ended with a Chinese terminator inside quotes
        self._out: list[str] = []

    def _emit(self) -> None:
        text = "".join(self._buf)
        self._buf.clear()
        self._size = 0
        if text.strip():
            self._out.append(text)

    def _add(self, c: str) -> None:
        """Append ``c``; a sentence grown past ``max_bytes`` is cut at a word boundary
        (:func:`split_at_word`) and goes on with the rest."""
        self._buf.append(c)
        self._size += 1 if c < "\x80" else len(c.encode("utf-8"))
        if self._size > self._max:
            head, rest = split_at_word("".join(self._buf), self._max)
            self._buf = list(rest)
            self._size = len(rest.encode("utf-8"))
            if head.strip():
                self._out.append(head)

    def _char(self, c: str) -> None:
        # Rule 1: the previous character was an English terminator.
        if self._ewt:
            if c == " ":
                self._add(c)
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
        self._add(c)
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
        self.__init__(max_bytes=self._max)
        return out


class SegmentGrouper:
    """The per-response grouping of docs/protocol.md#segments on top of a
    :class:`SentenceSplitter`; no segment longer than ``max_bytes``."""

    __slots__ = ("_first_done", "_max_bytes", "_min_bytes", "_queue", "_splitter")

    def __init__(
        self, *, min_bytes: int = GROUP_MIN_BYTES, max_bytes: int = MAX_SEGMENT_BYTES
    ) -> None:
        self._splitter = SentenceSplitter(max_bytes=max_bytes)
        self._queue: deque[str] = deque()
        self._first_done = False
        self._min_bytes = min_bytes
        self._max_bytes = max_bytes

    def _fits(self, group: str, sentence: str) -> bool:
        return len((group + sentence).encode("utf-8")) <= self._max_bytes

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
            while (
                self._queue
                and len(segment.encode()) < self._min_bytes
                and self._fits(segment, self._queue[0])
            ):
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
            if group and not self._fits(group, sentence):
                out.append(group)
                group = ""
            group += sentence
            if len(group.encode()) >= self._min_bytes:
                out.append(group)
                group = ""
        if group:
            out.append(group)
        self._queue.clear()
        self._first_done = False
        return [s for s in (g.strip() for g in out) if s]


def split_segments(
    deltas: list[str] | tuple[str, ...] | str, *, max_bytes: int = MAX_SEGMENT_BYTES
) -> list[str]:
    """All segments of a whole response given as its sequence of network reads (deltas)."""
    if isinstance(deltas, str):
        deltas = [deltas]
    grouper = SegmentGrouper(max_bytes=max_bytes)
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

"""The face a xiaozhi board shows for an answer, and the emoji kept out of its texts.

The board draws one of its named emotions (``llm{emotion}``); the answer's first emoji that
names one chooses it, else ``happy`` (as the xiaozhi reference server does). Emoji are taken
out of the texts the board shows: its fonts lack them.
"""

from __future__ import annotations

__all__ = ["DEFAULT", "emotion_of", "without_emoji"]

#: emoji -> the emotion name the firmware's emoji sets use
EMOTIONS = {
    "😶": "neutral",
    "🙂": "happy",
    "😆": "laughing",
    "😂": "funny",
    "😔": "sad",
    "😠": "angry",
    "😭": "crying",
    "😍": "loving",
    "😳": "embarrassed",
    "😲": "surprised",
    "😱": "shocked",
    "🤔": "thinking",
    "😉": "winking",
    "😎": "cool",
    "😌": "relaxed",
    "🤤": "delicious",
    "😘": "kissy",
    "😏": "confident",
    "😴": "sleepy",
    "😜": "silly",
    "🙄": "confused",
}
DEFAULT = ("🙂", "happy")

#: code point ranges taken for emoji (pictographs, symbols, dingbats)
_RANGES = (
    (0x1F300, 0x1F5FF),
    (0x1F600, 0x1F64F),
    (0x1F680, 0x1F6FF),
    (0x1F900, 0x1F9FF),
    (0x1FA70, 0x1FAFF),
    (0x2600, 0x26FF),
    (0x2700, 0x27BF),
)


def emotion_of(text: str) -> tuple[str, str]:
    """``(emoji, emotion)`` of the first emoji of ``text`` that names one, else
    :data:`DEFAULT`."""
    for ch in text:
        name = EMOTIONS.get(ch)
        if name is not None:
            return ch, name
    return DEFAULT


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _RANGES)


def without_emoji(text: str) -> str:
    """``text`` without its emoji (and the variation selector that may follow one)."""
    return "".join(ch for ch in text if not _is_emoji(ch) and ch != "\ufe0f").strip()

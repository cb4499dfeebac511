"""Traditional (Taiwan) -> Simplified Chinese, as the reference converts every transcript
(hanconv ``tw2sp`` there, OpenCC's ``tw2sp`` profile here)."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["to_simplified"]

log = logging.getLogger(__name__)

_converter: Any = None
_converter_failed = False


def to_simplified(text: str) -> str:
    """``text`` in Simplified Chinese (OpenCC ``tw2sp``); unchanged without Han characters, or
    if OpenCC is missing (logged once)."""
    global _converter, _converter_failed
    if _converter is None and not _converter_failed:
        try:
            import opencc

            _converter = opencc.OpenCC("tw2sp")
        except Exception as exc:  # ImportError, or a build without the tw2sp profile
            _converter_failed = True
            log.warning("OpenCC unavailable (%s): transcripts are not converted to Simplified", exc)
    if _converter is None or not any("\u3400" <= c <= "\u9fff" for c in text):
        return text
    return _converter.convert(text)

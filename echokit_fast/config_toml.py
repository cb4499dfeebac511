"""A :class:`~echokit_fast.config.Config` written as ``config.toml`` text: what the console's
config editor shows when ``serve`` runs on the embedded default (no file to show).

Only what a file would say: ``addr``, ``hello_wav`` and the AI sections, each key that
differs from its default (``platform`` always); ``[server]``, ``[limits]`` and the other
settings of our own are left out (their defaults, or ``serve`` flags such as ``--api-key``).
The text parses back into the same AI sections (a test checks it). Hand-written because the
standard library reads TOML but does not write it, and what is written here is small: strings,
numbers, booleans, arrays and tables.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from echokit_fast.config import Config

__all__ = ["to_toml"]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if _BARE.fullmatch(name) else _string(name)


def _string(value: str) -> str:
    # a JSON string is a TOML basic string, but for DEL, which TOML wants escaped
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    return _string(str(value))


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(header: str, body: dict[str, Any], lines: list[str], *, array: bool = False) -> None:
    lines += ["", f"[[{header}]]" if array else f"[{header}]"]
    nested = []
    for k, v in body.items():
        if v is None:
            continue
        if isinstance(v, dict) or _is_tables(v):
            nested.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in nested:
        if isinstance(v, dict):
            _table(f"{header}.{_key(k)}", v, lines)
        else:
            for item in v:
                _table(f"{header}.{_key(k)}", item, lines, array=True)


def _section(model: BaseModel) -> dict[str, Any]:
    body = model.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    platform = getattr(model, "platform", None)
    return {"platform": platform, **body} if platform else body


def to_toml(config: Config) -> str:
    """The TOML text of `config`'s ``addr``, ``hello_wav`` and AI sections."""
    lines = [f"addr = {_string(config.addr)}"]
    if config.hello_wav is not None:
        lines.append(f"hello_wav = {_string(config.hello_wav)}")
    for name in ("asr", "tts", "llm", "gemini", "claude"):
        section = getattr(config, name)
        if section is not None:
            _table(name, _section(section), lines)
    return "\n".join(lines) + "\n"

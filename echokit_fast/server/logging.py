"""Logging of `echokit-fast serve`: one handler on the root logger, so that ``--log-level``
applies to every logger (``echokit_fast.*``, ``uvicorn.*``, the libraries'), written as text
lines or as one JSON object per line.

JSON objects carry ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, then every
extra field of the record (``log.info(..., extra={"device": "abc"})``) and ``exception`` (the
traceback) when there is one. A record may carry its content as structured ``fields`` (a
dict) with a short ``event`` name, as the per-turn trace does
(:mod:`echokit_fast.conversation.trace`): in JSON the fields are members of the object and the
message is the event; in text the line is the record's message, unchanged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["FORMATS", "LEVELS", "TEXT_FORMAT", "JsonFormatter", "configure", "level_number"]

#: the values ``--log-level`` takes (``trace`` is uvicorn's level below ``debug``)
LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(levelname)s:  %(name)s: %(message)s"
TRACE_LEVEL = 5  # uvicorn's

# attributes every LogRecord has (not "extra" fields), and uvicorn's terminal-only copy
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
    "fields",
    "event",
}


def level_number(name: str) -> int:
    """The logging level of a ``LEVELS`` name (ValueError for another)."""
    name = name.lower()
    if name not in LEVELS:
        raise ValueError(f"expected one of {', '.join(LEVELS)}, got {name!r}")
    return TRACE_LEVEL if name == "trace" else logging.getLevelName(name.upper())


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=UTC)
        fields = getattr(record, "fields", None)
        structured = isinstance(fields, Mapping)
        message = getattr(record, "event", None) if structured else None
        obj: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message if isinstance(message, str) else record.getMessage(),
        }
        if structured:
            for key, value in fields.items():
                obj.setdefault(str(key), _jsonable(value))
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                obj.setdefault(key, _jsonable(value))
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exception"] = record.exc_text
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return json.dumps(obj, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send every logger's records at `level` and above to stderr, as `fmt` (text or json)."""
    if fmt not in FORMATS:
        raise ValueError(f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    logging.addLevelName(TRACE_LEVEL, "TRACE")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number(level))
    # Loggers that set a level of their own or keep their own handlers (uvicorn's, when it
    # was configured before) follow the root's.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("uvicorn") or name.startswith("echokit_fast"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.NOTSET)
            logger.handlers.clear()
            logger.propagate = True

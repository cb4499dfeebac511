"""How an LLM failure is told to the user: the notices and the HTTP status mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING

from echokit_fast.backends import http
from echokit_fast.backends.base import BackendError

if TYPE_CHECKING:
    import openai

__all__ = ["NOTICES", "NOTICE_FAILED", "NOTICE_TOOL_LOOP", "status_error", "tool_loop_error"]

NOTICES = http.LLM
#: a response the provider itself reports as failed
NOTICE_FAILED = "The language model could not answer."
NOTICE_TOOL_LOOP = "The assistant got stuck calling tools."


def status_error(exc: openai.APIStatusError) -> BackendError:
    """The BackendError for a non-2xx answer (its body, shortened, goes to the log)."""
    status = exc.status_code
    body = ""
    try:
        body = exc.response.text[:500]
    except Exception:
        body = str(exc.body)[:500]
    return NOTICES.error(f"LLM HTTP {status}: {body}", NOTICES.status(status))


def tool_loop_error(rounds: int) -> BackendError:
    """More than ``rounds`` rounds of tool calls in one reply."""
    return NOTICES.error(f"more than {rounds} rounds of tool calls in one reply", NOTICE_TOOL_LOOP)

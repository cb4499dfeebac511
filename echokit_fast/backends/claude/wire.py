"""The EchoKit-CC wire, as echokit_server 0.3.2 speaks it (docs/protocol.md#claude-layout).

One WebSocket per device at ``{url without trailing /}/{session id}``, the session id being
UUIDv5 of the device id in :data:`NAMESPACE`. JSON text messages, tagged by ``type``:

* to EchoKit-CC (serde's order: the tag, then the fields): ``CreateSession``, ``Input{input}``,
  ``Confirm``, ``Select{index}``, ``Cancel``;
* from it: ``session_state{session_id, current_state}`` (``current_state`` tagged by
  ``state``: ``Output{output, is_thinking}``, ``PreUseTool{request: [{id, name, input, done}],
  is_pending}``, ``StopUseTool{is_error}``, ``Idle``), ``session_idle``, ``session_ended``,
  ``session_error{error_code, ...}``, ``session_pty_output`` (ignored).

:func:`parse` reads an incoming message into an :class:`Incoming`; a message of another type, or
a state this module does not know (EchoKit-CC's later ``Working``), is kept as it is and
presents nothing (the reference fails on it). The sentences the reference shows for a tool
request are :func:`tool_prompt` and :func:`question`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from echokit_fast.backends import ws

__all__ = [
    "CANCEL",
    "CONFIRM",
    "CONFIRM_ITEMS",
    "CREATE_SESSION",
    "IDLE",
    "NAMESPACE",
    "Incoming",
    "Question",
    "bridge_url",
    "input_message",
    "is_idle",
    "parse",
    "question",
    "select",
    "session_id",
    "tool_prompt",
]

#: the namespace of the session ids (UUIDv5 of the device id)
NAMESPACE = uuid.UUID("8e1f6eb8-d389-4e62-9cfd-f1964e499c25")

#: the state a ``session_idle`` stands for
IDLE: dict[str, Any] = {"state": "Idle"}
#: the items of a yes/no question
CONFIRM_ITEMS = ("Confirm", "Cancel")


def _message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"), ensure_ascii=False)


CREATE_SESSION = _message("CreateSession")
CONFIRM = _message("Confirm")
CANCEL = _message("Cancel")


def input_message(text: str) -> str:
    return _message("Input", input=text)


def select(index: int) -> str:
    return _message("Select", index=index)


def session_id(device_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, device_id))


def bridge_url(url: str, device_id: str) -> str:
    """The WebSocket of ``device_id``'s session at the EchoKit-CC service ``url``."""
    return f"{url.rstrip('/')}/{session_id(device_id)}"


def is_idle(state: dict[str, Any] | None) -> bool:
    return state is not None and state.get("state") == "Idle"


@dataclass(frozen=True)
class Incoming:
    """One message from EchoKit-CC: its ``type``, the new ``state`` (``session_state`` and
    ``session_idle``), or the ``error`` (``session_error``, as text for the log)."""

    type: str
    state: dict[str, Any] | None = None
    error: str | None = None


def parse(text: str) -> Incoming:
    """The message ``text``; ValueError when it is not a JSON object with a ``type``, or a
    ``session_state`` without a ``current_state`` object tagged by ``state``."""
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    kind = msg.get("type") if isinstance(msg, dict) else None
    if not isinstance(kind, str):
        raise ValueError("not a message (no type)")
    if kind == "session_idle":
        return Incoming(kind, state=IDLE)
    if kind == "session_state":
        state = msg.get("current_state")
        if not isinstance(state, dict) or not isinstance(state.get("state"), str):
            raise ValueError("session_state without a current_state")
        return Incoming(kind, state=state)
    if kind == "session_error":
        detail = {k: v for k, v in msg.items() if k not in ("type", "session_id")}
        return Incoming(kind, error=ws.dumps(detail))
    return Incoming(kind)


def _json(value: Any) -> str:
    """``value`` as serde_json's ``Display`` writes a ``Value`` (compact, keys sorted)."""
    return ws.dumps(value)


def tool_prompt(name: str, args: Any) -> str:
    """The question for a tool request: its name, then its arguments (a string as it is, an
    object as ``key: value`` lines in key order, values as JSON)."""
    if isinstance(args, str):
        shown = args
    elif isinstance(args, dict):
        shown = "\n".join(f"{k}: {_json(v)}" for k, v in sorted(args.items()))
    else:
        shown = _json(args)
    return f"Claude is requesting to use tool `{name}` \n with args:\n{shown}"


class _Option(BaseModel):
    label: str
    description: str


class _Question(BaseModel):
    header: str
    question: str
    options: list[_Option]


class _AskUserQuestion(BaseModel):
    questions: list[_Question]


@dataclass(frozen=True)
class Question:
    """The first question of an ``AskUserQuestion`` tool request, as the device is asked."""

    message: str
    items: tuple[str, ...]


def question(args: Any) -> Question | None:
    """The first question of ``AskUserQuestion``'s ``args`` (None: it asks none); ValueError
    (saying what is wrong) for arguments of another shape."""
    try:
        parsed = _AskUserQuestion.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "arguments"
        raise ValueError(f"{where}: {first['msg']}") from exc
    if not parsed.questions:
        return None
    q = parsed.questions[0]
    return Question(
        f"{q.header}\n{q.question}\nPlease select one of the following options:",
        tuple(f"{o.label}: {o.description}" for o in q.options),
    )

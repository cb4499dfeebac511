"""Gemini Live's messages (the BidiGenerateContent WebSocket), as the reference writes and reads
them.

Out (:func:`setup`, :func:`activity_start`, :func:`audio`, :func:`activity_end`, :func:`text`):
compact JSON with sorted keys and UTF-8 as is, byte for byte what echokit_server's
``serde_json::json!`` sends: ``{"setup": {...}}`` and ``{"realtime_input": {...}}`` (the audio
``{"data": base64 PCM16, "mime_type": "audio/pcm;rate=16000"}``).

In (:func:`parse`): one message (text or binary frame) -> its events, in order. Each member of a
server message is read (the reference expects exactly one ``serverContent`` key and fails on
anything else, such as the real top-level ``setupComplete`` and ``goAway``):
``setupComplete``; ``serverContent``'s ``inputTranscription``, ``modelTurn`` parts (``text``,
thoughts skipped; ``inlineData`` audio), ``outputTranscription``, ``interrupted``,
``turnComplete``; ``goAway``. Anything else (``usageMetadata``, ``toolCall``, ...) is skipped;
a message that is not a JSON object is a :class:`ValueError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUDIO_MIME",
    "Event",
    "GoAway",
    "InputText",
    "Interrupted",
    "ModelAudio",
    "ModelText",
    "OutputText",
    "SetupComplete",
    "TurnComplete",
    "activity_end",
    "activity_start",
    "audio",
    "parse",
    "setup",
    "text",
]

#: the microphone audio's type
AUDIO_MIME = "audio/pcm;rate=16000"
#: Gemini's speech when its mime type names no rate
DEFAULT_AUDIO_RATE = 24000


def _dumps(message: Any) -> str:
    return json.dumps(message, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def setup(model: str, system_prompt: str | None, *, text_answers: bool) -> str:
    """The first message: the model, AUDIO or TEXT answers, the system instruction (if any),
    transcription of the user's audio (and of Gemini's, for audio answers), and automatic
    activity detection off (the server's VAD ends the user's turn)."""
    body: dict[str, Any] = {
        "model": model,
        "generationConfig": {"responseModalities": ["TEXT" if text_answers else "AUDIO"]},
        "inputAudioTranscription": {},
        "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
    }
    if system_prompt is not None:
        body["systemInstruction"] = {"parts": [{"text": system_prompt}]}
    if not text_answers:
        body["outputAudioTranscription"] = {}
    return _dumps({"setup": body})


def _realtime(item: dict[str, Any]) -> str:
    return _dumps({"realtime_input": item})


def activity_start() -> str:
    return _realtime({"activityStart": {}})


def activity_end() -> str:
    return _realtime({"activityEnd": {}})


def audio(pcm16: bytes) -> str:
    data = base64.b64encode(pcm16).decode("ascii")
    return _realtime({"audio": {"data": data, "mime_type": AUDIO_MIME}})


def text(value: str) -> str:
    return _realtime({"text": value})


# -- server messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupComplete:
    pass


@dataclass(frozen=True)
class InputText:
    """A piece of the transcript of the user's audio."""

    text: str


@dataclass(frozen=True)
class ModelText:
    """A text part of the model's turn (the answer, with TEXT answers)."""

    text: str


@dataclass(frozen=True)
class ModelAudio:
    """An audio part of the model's turn: s16le PCM at ``rate``."""

    pcm16: bytes
    rate: int


@dataclass(frozen=True)
class OutputText:
    """A piece of the transcript of the model's speech."""

    text: str


@dataclass(frozen=True)
class Interrupted:
    pass


@dataclass(frozen=True)
class TurnComplete:
    pass


@dataclass(frozen=True)
class GoAway:
    """The server will close the connection soon (``timeLeft``, as sent)."""

    time_left: str = ""


Event = (
    SetupComplete
    | InputText
    | ModelText
    | ModelAudio
    | OutputText
    | Interrupted
    | TurnComplete
    | GoAway
)

_RATE = re.compile(r"rate=(\d+)")


def _text_of(value: Any) -> str:
    text = value.get("text") if isinstance(value, dict) else None
    return text if isinstance(text, str) else ""


def _part(part: Any) -> Event | None:
    if not isinstance(part, dict) or part.get("thought"):
        return None
    if isinstance(part.get("text"), str):
        return ModelText(part["text"])
    blob = part.get("inlineData")
    if not isinstance(blob, dict):
        return None
    mime = str(blob.get("mimeType") or blob.get("mime_type") or "")
    if not mime.startswith("audio/pcm"):
        return None
    try:
        data = base64.b64decode(str(blob.get("data") or ""), validate=True)
    except (binascii.Error, ValueError):
        return None
    rate = _RATE.search(mime)
    whole = data[: len(data) // 2 * 2]  # an odd byte is no sample
    return ModelAudio(whole, int(rate.group(1)) if rate else DEFAULT_AUDIO_RATE)


def parse(message: str | bytes) -> list[Event]:
    """The events of one server message, in order (see the module docstring)."""
    try:
        msg = json.loads(message)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise ValueError(f"not a JSON object: {type(msg).__name__}")
    events: list[Event] = []
    if "setupComplete" in msg:
        events.append(SetupComplete())
    content = msg.get("serverContent")
    if isinstance(content, dict):
        heard = _text_of(content.get("inputTranscription"))
        if heard:
            events.append(InputText(heard))
        turn = content.get("modelTurn")
        parts = turn.get("parts") if isinstance(turn, dict) else None
        for part in parts if isinstance(parts, list) else ():
            event = _part(part)
            if event is not None:
                events.append(event)
        said = _text_of(content.get("outputTranscription"))
        if said:
            events.append(OutputText(said))
        if content.get("interrupted"):
            events.append(Interrupted())
        if content.get("turnComplete"):
            events.append(TurnComplete())
    away = msg.get("goAway")
    if away is not None:
        left = away.get("timeLeft") if isinstance(away, dict) else None
        events.append(GoAway(str(left or "")))
    return events

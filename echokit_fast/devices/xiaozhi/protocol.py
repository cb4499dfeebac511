"""The xiaozhi-esp32 wire format (docs/xiaozhi.md#messages): JSON text messages keyed by
``type`` both ways, binary frames of Opus audio both ways.

Binary frames carry one Opus packet each, framed as the connection's binary protocol version
says (the ``Protocol-Version`` header, the same in both directions; big-endian fields):

* 1 (the firmware's default): the packet alone;
* 2: a 16-byte header -- version (u16), type (u16, 0 = Opus), reserved (u32), timestamp in
  ms (u32, the firmware's server-AEC bookkeeping; we send 0), payload size (u32) -- then the
  packet;
* 3: a 4-byte header -- type (u8, 0), reserved (u8), payload size (u16) -- then the packet.

What the server sends is built here as compact JSON, ``type`` first, UTF-8 as is (the
firmware's cJSON reads it). ``session_id`` rides on every message as the firmware's own do;
the firmware never checks it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = [
    "FRAME_MS",
    "PROTOCOL_VERSIONS",
    "alert",
    "hello",
    "llm",
    "mcp",
    "pack_audio",
    "parse",
    "stt",
    "system",
    "tts",
    "unpack_audio",
]

#: the binary protocol versions of the firmware
PROTOCOL_VERSIONS = (1, 2, 3)
#: the Opus frame of both directions (the firmware's ``OPUS_FRAME_DURATION_MS``)
FRAME_MS = 60

_V2 = struct.Struct(">HHIII")
_V3 = struct.Struct(">BBH")


def unpack_audio(frame: bytes, version: int) -> bytes | None:
    """The Opus packet of a binary frame, or None when the frame is not a well-formed one
    of ``version`` (a header cut short, a size beyond the frame)."""
    if version == 2:
        if len(frame) < _V2.size:
            return None
        size = _V2.unpack_from(frame)[4]
        payload = frame[_V2.size : _V2.size + size]
    elif version == 3:
        if len(frame) < _V3.size:
            return None
        size = _V3.unpack_from(frame)[2]
        payload = frame[_V3.size : _V3.size + size]
    else:
        return frame or None
    return payload if len(payload) == size and size else None


def pack_audio(packet: bytes, version: int) -> bytes:
    """One Opus packet as a binary frame of ``version``."""
    if version == 2:
        return _V2.pack(2, 0, 0, 0, len(packet)) + packet
    if version == 3:
        return _V3.pack(0, 0, len(packet)) + packet
    return packet


def parse(text: str) -> dict[str, Any] | None:
    """A device message: a JSON object with a string ``type``, else None."""
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return None
    return msg


def _dump(msg: dict[str, Any]) -> str:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))


def hello(*, version: int, session_id: str, sample_rate: int) -> str:
    """The server hello: ``transport`` (the firmware ignores a hello without it), the
    session id, and the downlink audio the firmware sets its decoder to."""
    return _dump(
        {
            "type": "hello",
            "version": version,
            "transport": "websocket",
            "session_id": session_id,
            "audio_params": {
                "format": "opus",
                "sample_rate": sample_rate,
                "channels": 1,
                "frame_duration": FRAME_MS,
            },
        }
    )


def stt(text: str, session_id: str) -> str:
    """What the user said (shown as the user's chat line)."""
    return _dump({"type": "stt", "text": text, "session_id": session_id})


def llm(emotion: str, emoji: str, session_id: str) -> str:
    """The face of the answer (the firmware reads only ``emotion``)."""
    return _dump({"type": "llm", "text": emoji, "emotion": emotion, "session_id": session_id})


def tts(state: str, session_id: str, text: str | None = None) -> str:
    """``start`` (the device speaks: its audio queue is flushed), ``sentence_start`` with
    the segment's ``text`` (the subtitle), ``stop``."""
    msg: dict[str, Any] = {"type": "tts", "state": state}
    if text is not None:
        msg["text"] = text
    msg["session_id"] = session_id
    return _dump(msg)


def alert(status: str, message: str, emotion: str) -> str:
    """A notification: shown with the status and the face, with a vibration sound."""
    return _dump({"type": "alert", "status": status, "message": message, "emotion": emotion})


def system(command: str) -> str:
    """A system command (the firmware knows ``reboot``)."""
    return _dump({"type": "system", "command": command})


def mcp(payload: dict[str, Any], session_id: str) -> str:
    """A JSON-RPC message for the device's MCP server."""
    return _dump({"type": "mcp", "payload": payload, "session_id": session_id})

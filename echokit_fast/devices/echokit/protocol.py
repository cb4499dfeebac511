"""The EchoKit device protocol: `ServerEvent` MessagePack codec and client commands.

Byte-identical to rmp-serde's compact encoding used by echokit_server (docs/protocol.md#encoding).

The functions are `echokit_fast._native`'s own, re-exported without a Python wrapper
(they sit in the per-frame audio loop, where a wrapper call would add ~25% to an Opus
packet's encoding); their docstrings are the native ones and their signatures are typed
in `_native.pyi`:

- ``encode_event(event) -> bytes``: any `ServerEvent`, through rmp-serde itself.
- ``encode_audio_chunk(data, vowel=None) -> bytes``: the same bytes as
  ``encode_event({"AudioChunk": {"data": data}})`` (``AudioChunkWithVowel`` with a vowel),
  several times faster.
- ``decode_event(data) -> event``: tolerant like the firmware's decoder, strict about
  trailing bytes.
- ``parse_client_command(text) -> dict``: the device's JSON text commands
  (docs/protocol.md#client-commands).

Every error is a ValueError saying what is wrong.
"""

from __future__ import annotations

from typing import Any

from echokit_fast._native import (
    SERVER_EVENT_VARIANTS,
    decode_event,
    encode_audio_chunk,
    encode_event,
    parse_client_command,
)

#: the echokit_server release whose protocol, routes and config this server speaks (``GET
#: /version`` answers it, so tools that check an EchoKit server's version see one they know)
COMPATIBLE_VERSION = "0.3.2"

__all__ = [
    "COMPATIBLE_VERSION",
    "SERVER_EVENT_VARIANTS",
    "Buffer",
    "ClientCommand",
    "ServerEvent",
    "decode_event",
    "encode_audio_chunk",
    "encode_event",
    "parse_client_command",
]

#: Anything exposing a buffer of bytes (byte fields accept all of these).
Buffer = bytes | bytearray | memoryview

#: A `ServerEvent` in externally tagged form: the variant name (``"EndAudio"``) for a unit
#: variant, else ``{variant: {field: value}}``, e.g. ``{"ASR": {"text": "hi"}}``.
ServerEvent = str | dict[str, dict[str, Any]]

#: A parsed client command: ``{"event": name, **fields}``.
ClientCommand = dict[str, Any]

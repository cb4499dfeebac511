"""The EchoKit device protocol: `ServerEvent` MessagePack codec and client commands.

Thin wrappers over `echokit_fast._native`; byte-identical to rmp-serde's compact
encoding used by echokit_server (spec §3.2-3.3).
"""

from __future__ import annotations

from typing import Any

from echokit_fast import _native

__all__ = [
    "SERVER_EVENT_VARIANTS",
    "Buffer",
    "ClientCommand",
    "ServerEvent",
    "decode_event",
    "encode_audio_chunk",
    "encode_event",
    "parse_client_command",
]

#: Anything exposing a buffer of bytes.
Buffer = bytes | bytearray | memoryview

#: A `ServerEvent` in externally tagged form: the variant name for a unit variant,
#: else ``{variant: {field: value}}``.
ServerEvent = str | dict[str, dict[str, Any]]

#: A parsed client command: ``{"event": name, **fields}``.
ClientCommand = dict[str, Any]

#: Every `ServerEvent` variant name, in the reference server's declaration order.
SERVER_EVENT_VARIANTS: tuple[str, ...] = _native.SERVER_EVENT_VARIANTS


def encode_event(event: ServerEvent) -> bytes:
    """Encode a server→device event exactly as echokit_server does (`rmp_serde::to_vec`).

    `event` is the externally tagged form: a bare ``str`` for a unit variant
    (``"EndAudio"``), otherwise a one-key dict of the named fields, e.g.
    ``{"ASR": {"text": "hi"}}``, ``{"AudioChunk": {"data": b"..."}}``,
    ``{"AudioChunkWithVowel": {"data": b"...", "vowel": 2}}``,
    ``{"Choices": {"message": "...", "items": ["a", "b"]}}``.
    Byte fields take bytes, bytearray or memoryview and are written as MessagePack
    int arrays (not ``bin``), fields positionally, as the reference does.

    Raises ValueError for an unknown variant, a missing, extra or wrongly typed
    field, or a vowel outside 0..=255.
    """
    return _native.encode_event(event)


def encode_audio_chunk(data: Buffer, vowel: int | None = None) -> bytes:
    """Fast path for the audio hot loop.

    Same bytes as ``encode_event({"AudioChunk": {"data": data}})``, or, with a
    vowel, ``encode_event({"AudioChunkWithVowel": {"data": data, "vowel": vowel}})``,
    without building the dict; the GIL is released for large payloads.
    """
    return _native.encode_audio_chunk(data, vowel)


def decode_event(data: Buffer) -> ServerEvent:
    """Decode one MessagePack `ServerEvent` into the form `encode_event` takes.

    Accepts what the firmware's ``rmp_serde::from_slice`` accepts: the variant as
    a string or a one-entry map, fields as a positional array or a map of names,
    byte fields as an int array or ``bin``. Byte fields come back as ``bytes``.
    Raises ValueError for malformed, truncated or unknown input and for bytes
    trailing after the event.
    """
    return _native.decode_event(data)


def parse_client_command(text: str) -> ClientCommand:
    """Parse one JSON text frame sent by a device (spec §2.2).

    Returns e.g. ``{"event": "StartChat"}``, ``{"event": "Text", "input": "hi"}``
    or ``{"event": "Select", "index": 0}``. Keys other than the command's own are
    ignored, as the reference's serde parser does. Raises ValueError (with
    serde_json's description of the problem) for anything else: bad JSON, an
    unknown ``event``, a missing or wrongly typed field, a negative index.
    """
    return _native.parse_client_command(text)

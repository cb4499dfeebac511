"""Typed stub of the native module. Import the public wrappers in
`echokit_fast.audio` and `echokit_fast.protocol` instead of this module."""

import numpy as np  # noqa: F401  (used by the kernels below)
import numpy.typing as npt  # noqa: F401

__version__: str

# --- pcm ---

# --- wav ---

# --- resample ---

# --- opus ---

# --- vowel ---

# --- protocol ---

_Buffer = bytes | bytearray | memoryview
_ServerEvent = str | dict[str, dict[str, object]]

#: Every ServerEvent variant name, in the reference server's declaration order.
SERVER_EVENT_VARIANTS: tuple[str, ...]

def encode_event(event: _ServerEvent) -> bytes:
    """Encode a ServerEvent exactly as echokit_server does (rmp_serde::to_vec)."""

def encode_audio_chunk(data: _Buffer, vowel: int | None = None) -> bytes:
    """AudioChunk / AudioChunkWithVowel fast path, byte-identical to encode_event."""

def decode_event(data: _Buffer) -> _ServerEvent:
    """Decode one ServerEvent (tolerant like the firmware; no trailing bytes)."""

def parse_client_command(text: str) -> dict[str, object]:
    """Parse a device's JSON text command into {"event": name, **fields}."""

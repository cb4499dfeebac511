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

SERVER_EVENT_VARIANTS: tuple[str, ...]

def encode_event(event: _ServerEvent) -> bytes: ...
def encode_audio_chunk(data: _Buffer, vowel: int | None = None) -> bytes: ...
def decode_event(data: _Buffer) -> _ServerEvent: ...
def parse_client_command(text: str) -> dict[str, object]: ...

"""Typed stub of the native module. Import the public wrappers in
`echokit_fast.audio` and `echokit_fast.protocol` instead of this module."""

import numpy as np
import numpy.typing as npt

__version__: str

# --- pcm ---

def pcm16_to_float(
    data: bytes | npt.NDArray[np.uint8] | npt.NDArray[np.int16],
) -> npt.NDArray[np.float32]: ...
def float_to_pcm16(x: npt.NDArray[np.float32]) -> bytes: ...
def to_mono(
    x: npt.NDArray[np.float32] | npt.NDArray[np.int16], channels: int
) -> npt.NDArray[np.float32]: ...

# --- wav ---

def read_wav(data: bytes | npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], int]: ...
def write_wav(x: npt.NDArray[np.float32], sample_rate: int, bits: int = 16) -> bytes: ...

# --- resample ---

class Resampler:
    def __init__(self, from_rate: int, to_rate: int) -> None: ...
    def process(
        self, chunk: npt.NDArray[np.float32 | np.float64 | np.int16]
    ) -> npt.NDArray[np.float32]: ...
    def flush(self) -> npt.NDArray[np.float32]: ...
    def reset(self) -> None: ...
    @property
    def delay(self) -> int: ...
    @property
    def from_rate(self) -> int: ...
    @property
    def to_rate(self) -> int: ...

def resample(
    x: npt.NDArray[np.float32 | np.float64 | np.int16], from_rate: int, to_rate: int
) -> npt.NDArray[np.float32]: ...

# --- opus ---

class OpusEncoder:
    def __init__(self, sample_rate: int = 16000, frame_ms: float = 120.0) -> None: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def frame_size(self) -> int: ...
    @property
    def pending(self) -> int: ...
    def push(self, pcm: npt.NDArray[np.float32] | npt.NDArray[np.int16]) -> list[bytes]: ...
    def push_with_vowels(
        self, pcm: npt.NDArray[np.float32] | npt.NDArray[np.int16]
    ) -> list[tuple[bytes, int]]: ...
    def flush(self) -> list[bytes]: ...
    def flush_with_vowels(self) -> list[tuple[bytes, int]]: ...
    def reset(self) -> None: ...

class OpusDecoder:
    def __init__(self, sample_rate: int = 16000) -> None: ...
    @property
    def sample_rate(self) -> int: ...
    def decode(self, packet: bytes | bytearray) -> npt.NDArray[np.float32]: ...
    def reset(self) -> None: ...

# --- vowel ---

def vowel_of(
    frame: npt.NDArray[np.float32] | npt.NDArray[np.int16], sample_rate: int = 16000
) -> int: ...

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

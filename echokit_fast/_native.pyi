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

# --- opus ---

# --- vowel ---

# --- protocol ---

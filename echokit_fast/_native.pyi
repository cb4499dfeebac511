"""Typed stub of the native module. Import the public wrappers in
`echokit_fast.audio` and `echokit_fast.protocol` instead of this module."""

import numpy as np
import numpy.typing as npt

__version__: str

# --- pcm ---

# --- wav ---

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

# --- vowel ---

# --- protocol ---

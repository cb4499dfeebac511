"""Typed stub of the native module. Import the public wrappers in
`echokit_fast.audio` and `echokit_fast.protocol` instead of this module."""

import numpy as np
import numpy.typing as npt

__version__: str

# --- pcm ---

# --- wav ---

# --- resample ---

# --- opus ---

# --- vowel ---

# --- protocol ---

# --- vad ---

def vad_segments(
    probs: npt.NDArray[np.float64],
    audio_length_samples: int,
    sampling_rate: int,
    threshold: float,
    neg_threshold: float | None,
    min_speech_duration_ms: float,
    max_speech_duration_s: float,
    min_silence_duration_ms: float,
    speech_pad_ms: float,
    min_silence_at_max_speech: float,
    use_max_poss_sil_at_max_speech: bool,
) -> list[tuple[int, int]]: ...

class VadCore:
    """Per-stream Silero VAD state for many streams sharing one model."""

    def __init__(self, sampling_rate: int) -> None: ...
    @property
    def sampling_rate(self) -> int: ...
    @property
    def window_size(self) -> int: ...
    def __len__(self) -> int: ...
    def open(
        self,
        threshold: float,
        neg_threshold: float | None,
        min_silence_duration_ms: float,
        speech_pad_ms: float,
    ) -> int: ...
    def close(self, id: int) -> None: ...
    def reset(self, id: int) -> None: ...
    def push(self, id: int, samples: npt.NDArray[np.float32]) -> None: ...
    def push_pcm16(self, id: int, data: bytes) -> None: ...
    def ready_windows(self, id: int) -> int: ...
    def pending_samples(self, id: int) -> int: ...
    def iterator_state(self, id: int) -> tuple[bool, int]: ...
    def prepare(
        self, max_windows: int
    ) -> tuple[list[int], npt.NDArray[np.float32], npt.NDArray[np.float32]] | None: ...
    def commit(
        self, probs: npt.NDArray[np.float32], state: npt.NDArray[np.float32]
    ) -> list[tuple[int, int, bool, int]]: ...

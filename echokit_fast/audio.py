"""Audio kernels: PCM conversion, channel mixing, resampling, WAV, Opus, lip-sync vowels.

Thin wrappers over `echokit_fast._native` (Rust, GIL released); this module is the
public API, callers never import `_native` directly.
"""

from __future__ import annotations

from echokit_fast import _native

__all__: list[str] = []

# --- PCM conversion and channel mixing (pcm) ---

# --- WAV (wav) ---

# --- Resampling (resample) ---

import numpy as np  # kept inside this section so sections merge cleanly
import numpy.typing as npt

__all__ += ["RESAMPLE_MAX_RATE", "RESAMPLE_MIN_RATE", "Resampler", "resample"]

RESAMPLE_MIN_RATE = 8000
RESAMPLE_MAX_RATE = 48000


class Resampler(_native.Resampler):
    """Streaming mono resampler between two rates in 8000..48000 Hz.

    A polyphase windowed-sinc (Kaiser) FIR: passband flat within 0.1 dB up to
    0.9 x the lower Nyquist frequency, >= 80 dB stopband above it (images and
    aliases). ``Resampler(from_rate, to_rate)``; rates must be integers in
    range, else ``ValueError`` naming the value.

    - ``process(chunk) -> np.ndarray[float32]``: feed any number of samples (0 and
      1 included) of a 1-D float32 array (float64 and int16, scaled by 1/32768,
      are converted); returns the output samples the chunk completes. 2-D
      input is rejected (mono only; mix down with ``to_mono`` first).
    - ``flush() -> np.ndarray[float32]``: ends the stream, returning the outputs
      still held back (the input is continued with silence), then resets.
    - ``reset()``: drops the stream's state without output.
    - ``delay``: latency in output samples. Output sample ``n`` is the input at
      time ``n * from_rate / to_rate`` (the stream is aligned with its input, no
      leading delay); an output is emitted once all input its filter needs has
      arrived, so after ``n_in`` input samples a stream has emitted
      ``round(n_in * to_rate / from_rate) - d`` samples with ``d`` equal to
      ``delay`` or ``delay - 1`` (never more than ``delay``).
    - ``from_rate`` / ``to_rate``.

    Contract: the concatenation of all ``process`` outputs and the final
    ``flush`` equals ``resample(whole_input, from_rate, to_rate)`` sample for
    sample (same float32 values, whatever the chunking) and has
    ``round(n_in * to_rate / from_rate)`` samples (halves rounded up). Equal
    rates pass samples through with ``delay == 0``.

    The GIL is released while processing; calls on one object from several
    threads are serialised (each stream is still one sequence of chunks).
    """

    __slots__ = ()


def resample(x: npt.ArrayLike, from_rate: int, to_rate: int) -> npt.NDArray[np.float32]:
    """Resample mono audio ``x`` from ``from_rate`` to ``to_rate`` Hz in one go.

    ``x``: 1-D float32 (float64 and int16 -- scaled by 1/32768 -- are converted;
    other array-likes go through ``np.asarray``). The result is aligned with
    the input (no delay to trim), ``round(len(x) * to_rate / from_rate)``
    samples long, and equal to what a :class:`Resampler` stream produces for
    the same input. Equal rates return a float32 copy. Quality as for
    :class:`Resampler`. Raises ``ValueError`` for rates outside 8000..48000 or
    not integers, for 2-D input (mono only) and for other dtypes.
    """
    if not isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=np.float32)
    return _native.resample(x, from_rate, to_rate)


# --- Opus (opus) ---

# --- Lip-sync vowels (vowel) ---

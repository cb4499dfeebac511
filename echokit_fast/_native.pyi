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

"""Audio kernels: PCM conversion, channel mixing, resampling, WAV, Opus, lip-sync vowels.

Thin wrappers over `echokit_fast._native` (Rust, GIL released); this module is the
public API, callers never import `_native` directly.
"""

from __future__ import annotations

from echokit_fast import _native  # noqa: F401

__all__: list[str] = []

# --- PCM conversion and channel mixing (pcm) ---

# --- WAV (wav) ---

# --- Resampling (resample) ---

# --- Opus (opus) ---

# --- Lip-sync vowels (vowel) ---

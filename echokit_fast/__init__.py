"""echokit-fast: a fast, self-hosted voice-AI server for EchoKit devices."""

# One source of the version: native/Cargo.toml. The native module is built from it
# (CARGO_PKG_VERSION) and maturin writes it into the package metadata (pyproject's
# `dynamic = ["version"]`), so the module, the metadata and `echokit-fast --version` agree.
from echokit_fast._native import __version__

__all__ = ["__version__"]

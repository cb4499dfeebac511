"""echokit-fast: a fast, self-hosted voice-AI server for EchoKit devices."""

from echokit_fast._native import __version__ as _native_version

__version__ = "0.1.0"

if _native_version != __version__:  # a stale build of the native module
    raise ImportError(
        f"echokit_fast._native is version {_native_version} but the package is {__version__}; "
        "rebuild it with `maturin develop --release`"
    )

__all__ = ["__version__"]

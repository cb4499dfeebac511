"""The EchoKit device protocol: `ServerEvent` MessagePack codec and client commands.

Thin wrappers over `echokit_fast._native`; byte-identical to rmp-serde's compact
encoding used by echokit_server (spec §3.2-3.3).
"""

from __future__ import annotations

from echokit_fast import _native  # noqa: F401

__all__: list[str] = []

"""HTTP/WebSocket services; each module exposes `routes(ctx: AppContext) -> list[BaseRoute]`."""

from __future__ import annotations

from types import ModuleType


def service_modules() -> list[ModuleType]:
    """The service modules whose routes `create_app` mounts (imported lazily)."""
    import importlib

    names: list[str] = ["asr", "device", "tts", "vad"]
    return [importlib.import_module(f"echokit_fast.api.{name}") for name in names]

"""HTTP/WebSocket services; each module exposes `routes(ctx: AppContext) -> list[BaseRoute]`."""

from __future__ import annotations

from types import ModuleType


def service_modules() -> list[ModuleType]:
    """The service modules whose routes `create_app` mounts (imported lazily)."""
    import importlib

    names: list[str] = [
        "echokit_fast.api.asr",
        "echokit_fast.api.tts",
        "echokit_fast.api.vad",
        "echokit_fast.devices.echokit.routes",
    ]
    return [importlib.import_module(name) for name in names]

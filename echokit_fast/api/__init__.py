"""HTTP/WebSocket services; each module exposes `routes(state: AppState) -> list[BaseRoute]`."""

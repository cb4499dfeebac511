"""OpenAI's model listing: ``GET /v1/models`` and ``GET /v1/models/{id}``.

The models are the embedded engines this process has loaded: the Whisper model (its id,
e.g. ``whisper-base``; the transcription routes answer every ``model`` name with it), the TTS
engine (``hibari`` or ``piper``) and each of its voices as ``<engine>/<voice>`` (the names
``voice`` takes), and the in-process LLM when one is loaded (its GGUF file name without
``.gguf``; ``/v1/chat/completions`` answers every ``model`` name with it). An unknown id is
a 404 with an OpenAI error body (``model_not_found``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from echokit_fast.api.common import error_response
from echokit_fast.server.state import AppState

CREATED = 1_700_000_000  # a fixed "created" time: the models have no creation date here
OWNER = "echokit-fast"


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": OWNER}


def served(state: AppState) -> list[dict[str, Any]]:
    """Every model id the loaded engines answer to, in OpenAI's format."""
    ids: list[str] = []
    if state.asr is not None and isinstance(getattr(state.asr, "model_id", None), str):
        ids.append(state.asr.model_id)
    if state.tts is not None and isinstance(getattr(state.tts, "engine", None), str):
        ids.append(state.tts.engine)
        ids.extend(f"{state.tts.engine}/{voice}" for voice in state.tts.voices())
    if state.llm is not None:
        ids.append(state.llm.model_id)
    return [_model(i) for i in ids]


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": served(request.app.state.echokit)})


async def model(request: Request) -> Response:
    wanted = request.path_params["id"]
    for entry in served(request.app.state.echokit):
        if entry["id"] == wanted:
            return JSONResponse(entry)
    return error_response(
        404,
        f"The model {wanted!r} does not exist on this server (GET /v1/models lists them)",
        param="model",
        code="model_not_found",
    )


def routes(state: AppState) -> list[BaseRoute]:
    return [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{id:path}", model, methods=["GET"]),
    ]

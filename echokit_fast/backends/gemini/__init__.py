"""``[gemini]``: Gemini Live, the live layouts (``gemini`` alone: Gemini speaks; with ``[tts]``:
Gemini answers in text and our Speaker speaks it). The section model is here (light: loading a
config imports no WebSocket client); the client is :mod:`.client`, its messages :mod:`.wire`.

Our keys besides the reference's (``api_key``, ``model``, ``sys_prompts``): ``url`` (the Live
API endpoint; ``?key=`` is appended), ``connect_timeout_s`` (opening the socket and its setup)
and ``reply_timeout_s`` (to the first message of an answer, and between its messages).
"""

from __future__ import annotations

from pydantic import Field

from echokit_fast.backends.schema import Message, Section, WsUrl

__all__ = ["GEMINI_LIVE_URL", "GeminiConfig"]

#: the reference's endpoint (the v1beta BidiGenerateContent WebSocket)
GEMINI_LIVE_URL = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)


class GeminiConfig(Section):
    """``[gemini]``: Gemini Live (only the first ``sys_prompts`` entry is used, whatever its
    role, as in the reference)."""

    api_key: str
    model: str = "models/gemini-2.0-flash-exp"
    sys_prompts: list[Message] = Field(default_factory=list)
    # ours: the endpoint and the timeouts (the reference has none)
    url: WsUrl = GEMINI_LIVE_URL
    connect_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    reply_timeout_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)

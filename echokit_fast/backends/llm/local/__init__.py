"""``[llm] platform = "local"`` (ours): a GGUF model in-process through llama.cpp
(``llama-cpp-python``, the ``llm`` extra).

This module is light (the config model and the registration); the engine, which imports
llama.cpp, is :mod:`.engine`, imported only when the platform is built.

* ``model``: a local ``.gguf`` file, or ``REPO/FILE.gguf`` on the Hugging Face Hub (downloaded
  once into the Hub's cache, with a progress bar);
* ``chat_format``: unset, the chat template in the model's metadata
  (``tokenizer.chat_template``) formats the conversation, and a model without one is refused at
  start-up; or one of llama-cpp-python's formats (``"chatml"``, ``"llama-3"``, ...);
  ``"chatml-function-calling"`` is the one that returns tool calls (needed for ``mcp_server``);
* ``context`` (4096 tokens), ``threads`` (0: one core fewer than the machine has, at most 8,
  so that Whisper, the TTS and the VAD keep a core on a small box), ``gpu_layers`` (0; -1: all);
* sampling: ``temperature`` (0.7), ``top_p`` (0.95), ``max_tokens`` (512 per answer), ``seed``
  (unset: random); ``extra`` adds any other keyword of llama-cpp-python's
  ``create_chat_completion`` (``top_k``, ``repeat_penalty``, ``stop`` ...), checked at start-up;
* ``max_queue`` (8): answers waiting for the model while it writes one; past it a device hears
  that the model is busy and the API answers 429;
* ``history`` (5), ``sys_prompts``, ``dynamic_prompts``, ``prompts_url``, ``mcp_server``:
  exactly as for ``openai_chat``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from echokit_fast.backends import registry
from echokit_fast.backends.base import Conversation
from echokit_fast.backends.llm.openai_chat import ChatPrompts

__all__ = ["TOOL_CHAT_FORMATS", "LocalLLM"]

#: llama-cpp-python's chat formats that turn a model's answer into OpenAI tool calls (the
#: functionary ones need a Hugging Face tokenizer download, so are not offered)
TOOL_CHAT_FORMATS = ("chatml-function-calling",)


class LocalLLM(ChatPrompts):
    """``[llm] platform = "local"``: the embedded llama.cpp engine (ours)."""

    platform: Literal["local"] = "local"
    model: str = Field(min_length=1)
    chat_format: str | None = None
    context: int = Field(default=4096, ge=64)
    threads: int = Field(default=0, ge=0)
    gpu_layers: int = Field(default=0, ge=-1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    seed: int | None = None
    max_queue: int = Field(default=8, ge=0)
    history: int = Field(default=5, ge=0)

    @model_validator(mode="after")
    def _tools_need_a_tool_format(self) -> LocalLLM:
        tools = isinstance((self.extra or {}).get("tools"), list)
        if (self.mcp_server or tools) and self.chat_format not in TOOL_CHAT_FORMATS:
            what = "mcp_server" if self.mcp_server else "extra.tools"
            raise ValueError(
                f"{what} needs a chat format that returns tool calls: set chat_format = "
                f"{TOOL_CHAT_FORMATS[0]!r} (a model's own chat template cannot give llama.cpp "
                "tool calls)"
            )
        return self

    @property
    def tools_supported(self) -> bool:
        """Whether the answers can be tool calls (the device's tools are offered too)."""
        return self.chat_format in TOOL_CHAT_FORMATS


@registry.llm("local", config=LocalLLM)
def build(cfg: LocalLLM, needs: registry.Needs) -> Callable[..., Conversation]:
    """Conversations over the application's shared engine when given, else a new one."""
    if needs.local_llm is not None:
        engine = needs.local_llm(cfg)
    else:
        engine = registry.import_engine(f"{__name__}.engine", "from_config", "LLM")(cfg)
    backend = registry.import_engine(f"{__name__}.chat", "LocalChatBackend", "LLM")(cfg, engine)
    backend.max_history_bytes = needs.max_history_bytes
    return backend.conversation

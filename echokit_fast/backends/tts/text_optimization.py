"""``[tts.text_optimization]`` of ``gsv`` and ``stream_gsv``: an LLM rewrites each segment into
text a speech synthesizer reads well (numbers, dates, symbols and URLs spelled out) before it
is spoken, as echokit_server 0.3.2 does.

The request is the reference's: the section's ``prompts`` (default: the reference's built-in
English prompt and example, or the Chinese ones when ``TTS_OPTIMIZATION_PROMPT_LANG=zh``; the
texts are in ``prompts/``),
then the segment as a ``user`` message, streamed from the chat-completions endpoint ``url``
with ``model`` and ``api_key``. It goes through the ``openai_chat`` platform's client (one
conversation per segment, no history), so key handling, timeouts and errors are that
platform's. Unlike the reference, a failed or empty rewrite is not a failed segment: it is
logged and the original text is spoken.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

from echokit_fast.backends.base import Pcm, Speaker
from echokit_fast.backends.llm.openai_chat import ChatBackend, OpenAIChatLLM
from echokit_fast.backends.schema import Message, TextOptimization

__all__ = ["OptimizedSpeaker", "TextOptimizer", "default_prompts", "with_text_optimization"]

log = logging.getLogger(__name__)

#: the environment variable choosing the built-in prompt (``zh``: Chinese; else English)
LANG_ENV = "TTS_OPTIMIZATION_PROMPT_LANG"

_PROMPTS = Path(__file__).with_name("prompts")

#: the example exchanges after the system prompt, as the reference sends them
_EXAMPLES = {
    "en": [("2026 year is a year full of hope.", "twenty twenty-six year is a year full of hope.")],
    "zh": [
        ("2026年是一个充满希望的年份。", "二零二六年是一个充满希望的年份。"),
        ("2026 year is a year full of hope.", "twenty twenty-six year is a year full of hope."),
    ],
}


def default_prompts(lang: str | None = None) -> list[Message]:
    """The built-in prompts: ``lang`` (default: ``$TTS_OPTIMIZATION_PROMPT_LANG``, else
    English) ``zh`` gives the Chinese one, anything else the English one."""
    lang = (lang if lang is not None else os.environ.get(LANG_ENV, "en")).strip().lower()
    key = "zh" if lang == "zh" else "en"
    system = (_PROMPTS / f"text_optimization_{key}.txt").read_text(encoding="utf-8")
    prompts = [Message(role="system", content=system)]
    for user, assistant in _EXAMPLES[key]:
        prompts += [
            Message(role="user", content=user),
            Message(role="assistant", content=assistant),
        ]
    return prompts


class TextOptimizer:
    """Rewrites one segment at a time through ``[tts.text_optimization]``'s endpoint."""

    def __init__(
        self,
        cfg: TextOptimization,
        *,
        first_token_timeout: float = 15.0,
        idle_timeout: float = 10.0,
    ) -> None:
        prompts = list(cfg.prompts) if cfg.prompts is not None else default_prompts()
        lead = next((i for i, m in enumerate(prompts) if m.role != "system"), len(prompts))
        chat = OpenAIChatLLM(
            url=cfg.url,
            api_key=cfg.api_key or None,
            model=cfg.model,
            history=0,
            # the leading system prompts, then the rest (the examples) in their order
            sys_prompts=prompts[:lead],
            dynamic_prompts=prompts[lead:],
        )
        self.url = cfg.url
        self.backend = ChatBackend(
            chat, first_token_timeout=first_token_timeout, idle_timeout=idle_timeout
        )

    async def rewrite(self, text: str) -> str:
        """``text`` rewritten for speech; ``text`` itself when the endpoint fails or answers
        nothing (logged)."""
        parts: list[str] = []
        try:
            conv = self.backend.conversation()
            async with aclosing(conv.reply(text)) as stream:
                async for item in stream:
                    if isinstance(item, str):
                        parts.append(item)
        except Exception as exc:  # every failure of the endpoint: speak the original
            log.warning(
                "tts text optimization %s failed (%s); speaking the text as is", self.url, exc
            )
            return text
        rewritten = "".join(parts).strip()
        if not rewritten:
            log.warning("tts text optimization %s answered nothing; speaking as is", self.url)
            return text
        log.debug("tts text optimization: %r -> %r", text, rewritten)
        return rewritten

    async def aclose(self) -> None:
        await self.backend.aclose()


class OptimizedSpeaker:
    """A :class:`~echokit_fast.backends.base.Speaker` that rewrites each text with a
    :class:`TextOptimizer` before ``inner`` speaks it."""

    def __init__(self, inner: Speaker, optimizer: TextOptimizer) -> None:
        self.inner = inner
        self.optimizer = optimizer

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        spoken = await self.optimizer.rewrite(text)
        async with aclosing(self.inner.speak(spoken, sample_rate=sample_rate)) as it:
            async for chunk in it:
                yield chunk

    async def aclose(self) -> None:
        await self.optimizer.aclose()
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


def with_text_optimization(speaker: Speaker, cfg: TextOptimization | None) -> Speaker:
    """``speaker`` itself, or wrapped in an :class:`OptimizedSpeaker` when ``cfg`` is set."""
    return speaker if cfg is None else OptimizedSpeaker(speaker, TextOptimizer(cfg))

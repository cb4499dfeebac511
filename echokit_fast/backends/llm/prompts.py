"""Prompts of an ``[llm]`` section, as the two OpenAI platforms load them.

``openai_chat`` (:func:`load_prompts`): ``prompts_url`` (JSON with ``sys_prompts`` and
``dynamic_prompts``) replaces the configured ones when it works; then every ``{{url}}`` in the
first system prompt is expanded (:mod:`.includes`). ``openai_responses``
(:func:`load_instructions`): the first ``sys_prompts`` entry when it is a ``system`` one
(includes expanded), else ``instructions``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from echokit_fast.backends.http import PROMPT_MAX_BYTES, get_capped
from echokit_fast.backends.llm.includes import IncludeCache, expand_includes
from echokit_fast.backends.schema import Message

__all__ = ["Msg", "as_msg", "load_instructions", "load_prompts"]

log = logging.getLogger(__name__)

#: a chat message (or any request/response object) as JSON
Msg = dict[str, Any]


def as_msg(m: Message | Msg) -> Msg:
    """``{"role", "content"}`` of a configured or received message."""
    if isinstance(m, Message):
        return {"role": m.role, "content": m.content}
    return {"role": m.get("role", "assistant"), "content": m.get("content", "") or ""}


async def load_prompts(
    cfg: Any, http: httpx.AsyncClient, cache: IncludeCache
) -> tuple[list[Msg], list[Msg]]:
    """``(sys_prompts, dynamic_prompts)``: from ``prompts_url`` when it works, else the
    configured ones; includes of the first system prompt expanded."""
    sys_prompts = [as_msg(m) for m in cfg.sys_prompts]
    dynamic = [as_msg(m) for m in cfg.dynamic_prompts]
    if cfg.prompts_url:
        try:
            status, body = await get_capped(http, cfg.prompts_url, PROMPT_MAX_BYTES)
            if status != 200:
                raise ValueError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            got_sys = [as_msg(Message.model_validate(m)) for m in data["sys_prompts"]]
            got_dyn = [as_msg(Message.model_validate(m)) for m in data["dynamic_prompts"]]
            sys_prompts, dynamic = got_sys, got_dyn
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("prompts_url %s: %s; using the configured prompts", cfg.prompts_url, exc)
    if sys_prompts and sys_prompts[0]["role"] == "system":
        sys_prompts[0]["content"] = await expand_includes(sys_prompts[0]["content"], http, cache)
    return sys_prompts, dynamic


async def load_instructions(cfg: Any, http: httpx.AsyncClient, cache: IncludeCache) -> str:
    """The content of the first ``sys_prompts`` entry if its role is ``system`` (includes
    expanded), else ``cfg.instructions``."""
    prompts = cfg.sys_prompts
    if prompts and prompts[0].role == "system":
        return await expand_includes(prompts[0].content, http, cache)
    return cfg.instructions

"""Tool calls streamed as OpenAI-style ``delta.tool_calls`` fragments, assembled by ``index``
(the reference executed the first fragment with empty arguments); whole calls in one delta
(llama.cpp / LlamaEdge) work too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from echokit_fast.backends.llm.prompts import Msg

__all__ = ["ToolCallAssembler"]


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: str = ""


class ToolCallAssembler:
    """Collects tool calls from streamed ``delta.tool_calls`` fragments.

    OpenAI style: fragments carry an ``index``; the first has ``id`` and ``function.name``,
    later ones pieces of ``function.arguments`` to concatenate. Fragments without ``index``
    (servers that send whole calls in one delta) start a new call when they carry a new
    ``id``, else continue the last one.
    """

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._by_index: dict[Any, _Call] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragments: list[dict[str, Any]]) -> None:
        for frag in fragments:
            if not isinstance(frag, dict):
                continue
            index = frag.get("index")
            fid = frag.get("id") or ""
            if index is not None:
                call = self._by_index.get(index)
                if call is None:
                    call = self._by_index[index] = _Call()
                    self._calls.append(call)
            elif fid and (not self._calls or self._calls[-1].id not in ("", fid)):
                call = _Call()
                self._calls.append(call)
            elif self._calls:
                call = self._calls[-1]
            else:
                call = _Call()
                self._calls.append(call)
            if fid and not call.id:
                call.id = fid
            fn = frag.get("function") or {}
            name = fn.get("name")
            if name and not call.name:
                call.name = name
            args = fn.get("arguments")
            if isinstance(args, str):
                call.arguments += args
            elif isinstance(args, dict):  # some servers send an object
                call.arguments += json.dumps(args)

    def calls(self) -> list[Msg]:
        """The assembled calls as OpenAI ``tool_calls`` entries (ids made up where missing)."""
        out = []
        for i, c in enumerate(self._calls):
            out.append(
                {
                    "id": c.id or f"call_{i}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments or "{}"},
                }
            )
        return out

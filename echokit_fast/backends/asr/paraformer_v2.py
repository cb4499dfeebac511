"""``[asr] platform = "paraformer_v2"`` (alias ``ParaformerV2``): DashScope realtime ASR.

Schema only for now: a config naming it loads, and ``serve`` / ``check-config`` refuse it.
"""

from __future__ import annotations

from typing import Literal

from echokit_fast.backends import registry
from echokit_fast.backends.schema import Section

__all__ = ["ParaformerV2ASR"]


class ParaformerV2ASR(Section):
    """``[asr] platform = "paraformer_v2"`` (alias ``ParaformerV2``): DashScope realtime ASR."""

    platform: Literal["paraformer_v2"] = "paraformer_v2"
    paraformer_token: str
    url: str = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"


registry.asr(
    "paraformer_v2", aliases=["ParaformerV2"], config=ParaformerV2ASR, untagged=["paraformer_token"]
)

"""The claude layout (``[claude] url`` with ``[asr]`` and ``[tts]``): a device talks to Claude
Code through an EchoKit-CC service (docs/protocol.md#claude-layout). :mod:`.wire` is the
service's wire format, :mod:`.bridge` the conversation of each device."""

from echokit_fast.backends.claude.bridge import ClaudeBridge, ClaudeBridges

__all__ = ["ClaudeBridge", "ClaudeBridges"]

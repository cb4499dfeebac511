"""The device's microphone stream: binary frames of PCM16 LE 16 kHz mono
(docs/protocol.md#microphone-audio)."""

from __future__ import annotations

__all__ = ["EvenBytes"]


class EvenBytes:
    """Keeps a byte stream of PCM16 whole: an odd trailing byte of one frame is carried into
    the next, so later samples stay aligned."""

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = b""

    def align(self, data: bytes) -> bytes:
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) & 1:
            self._carry = data[-1:]
            data = data[:-1]
        return data

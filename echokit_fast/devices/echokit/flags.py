"""The chat endpoint's query flags (docs/protocol.md#query-flags)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Flags"]


@dataclass(frozen=True)
class Flags:
    """The chat endpoint's query flags: booleans, strictly ``true`` or ``false``.

    ``reconnect``: keep the conversation's history and send no hello; ``opus``/``vowel``: the
    audio format (:class:`~echokit_fast.devices.echokit.output.AudioOut`); ``stream_asr``: the
    server ends the utterance (its VAD, or a streaming recognizer; else the device's
    ``Submit``); ``record``: record mode.
    """

    reconnect: bool = False
    opus: bool = False
    vowel: bool = False
    stream_asr: bool = False
    record: bool = False

    NAMES = ("reconnect", "opus", "vowel", "stream_asr", "record")

    @classmethod
    def parse(cls, items: list[tuple[str, str]], *, allow_record: bool = True) -> Flags:
        """From the query's ``(key, value)`` pairs. Unknown keys are ignored; a flag given
        twice, or with a value other than ``true``/``false``, is a ValueError (-> HTTP 400)."""
        names = cls.NAMES if allow_record else cls.NAMES[:-1]
        values: dict[str, bool] = {}
        for key, value in items:
            if key not in names:
                continue
            if key in values:
                raise ValueError(f"query parameter {key!r} is given more than once")
            if value not in ("true", "false"):
                raise ValueError(
                    f"query parameter {key}={value!r}: expected true or false "
                    "(Failed to deserialize query string)"
                )
            values[key] = value == "true"
        return cls(**values)

"""Per-turn timing: one JSON log line per turn and Prometheus histograms.

Stages (monotonic seconds, ``None`` when the turn did not reach them):

* ``speech_end`` -- the VAD released (the user stopped talking; last release of the turn);
* ``end_vad`` -- end of turn decided and ``EndVad`` written;
* ``asr_done`` -- the final transcript is known;
* ``llm_first`` -- the first text token of the answer;
* ``tts_first`` -- the first synthesised audio of the answer;
* ``first_frame`` / ``last_frame`` -- the first / last audio frame written to the socket.

The JSON line (logger ``echokit_fast.trace``, level INFO; with ``--log-format json`` its
members are fields of the log object, whose message is ``turn``) gives each stage in milliseconds
after the turn's origin (``speech_end``, or the arrival of ``Text``/``Submit`` when there is
no VAD end), plus the outcome. The histogram ``echokit_device_turn_stage_seconds{stage}``
observes the same offsets; ``echokit_device_turns_total{outcome}`` counts turns.

:class:`RecentTurns` keeps the last records of one app (the status page's waterfall), fed
with what :meth:`TurnTrace.finish` returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["RECENT_TURNS", "STAGES", "RecentTurns", "TurnTrace", "printable"]

trace_log = logging.getLogger("echokit_fast.trace")

STAGES = (
    "speech_end",
    "end_vad",
    "asr_done",
    "llm_first",
    "tts_first",
    "first_frame",
    "last_frame",
)

_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
)

STAGE_SECONDS = Histogram(
    "echokit_device_turn_stage_seconds",
    "Time from the end of the user's speech (or typed input) to each stage of a turn",
    ["stage"],
    buckets=_BUCKETS,
)
TURNS = Counter(
    "echokit_device_turns_total",
    "Device turns by outcome (ok, empty, error, cancelled, disconnected)",
    ["outcome"],
)
# livesum: with ``serve --workers`` (prometheus_client's multiprocess mode) /metrics sums the
# running workers' values; one process: the value itself
SESSIONS = Gauge(
    "echokit_device_sessions",
    "Device sessions held (attached or keeping history)",
    multiprocess_mode="livesum",
)
CONNECTIONS = Gauge(
    "echokit_device_connections",
    "Device WebSocket connections attached",
    multiprocess_mode="livesum",
)


#: the turn records :class:`RecentTurns` keeps
RECENT_TURNS = 50


def printable(text: str) -> str:
    """``text`` escaped as the trace's JSON lines write a string (CR, LF, NUL and the other
    control characters as ``\\r``, ``\\n``, ``\\u0000`` ..., quotes and backslashes too), for
    a log line: what a device chose (its id) can neither break a line nor forge one."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


@dataclass
class TurnTrace:
    device: str
    turn: int
    origin: float = field(default_factory=time.monotonic)
    stamps: dict[str, float] = field(default_factory=dict)
    outcome: str = "ok"
    detail: dict[str, object] = field(default_factory=dict)

    def mark(self, stage: str, t: float | None = None) -> None:
        """Record ``stage`` now (or at ``t``), keeping the first time it happened."""
        self.stamps.setdefault(stage, time.monotonic() if t is None else t)

    def set(self, stage: str, t: float | None = None) -> None:
        """Record ``stage`` now (or at ``t``), replacing an earlier time."""
        self.stamps[stage] = time.monotonic() if t is None else t

    def offsets_ms(self) -> dict[str, float]:
        base = self.stamps.get("speech_end", self.origin)
        return {s: round((self.stamps[s] - base) * 1000.0, 2) for s in STAGES if s in self.stamps}

    def finish(self) -> dict[str, object]:
        """Log the JSON line and observe the histograms; returns the logged record."""
        base = self.stamps.get("speech_end", self.origin)
        for stage in STAGES:
            t = self.stamps.get(stage)
            if t is not None and stage != "speech_end":
                STAGE_SECONDS.labels(stage).observe(max(t - base, 0.0))
        TURNS.labels(self.outcome).inc()
        record: dict[str, object] = {
            "device": self.device,
            "turn": self.turn,
            "outcome": self.outcome,
            "ms": self.offsets_ms(),
            **self.detail,
        }
        # text logs: the JSON line; JSON logs: the fields themselves (echokit_fast.server.logging)
        line = json.dumps(record, ensure_ascii=False, sort_keys=True)
        trace_log.info(line, extra={"fields": record, "event": "turn"})
        return record


class RecentTurns:
    """The records of the last ``size`` turns of one app, oldest first: each as
    :meth:`TurnTrace.finish` returned it, plus ``seq`` (its number since start-up, from 1)
    and ``at`` (the wall-clock time it ended, Unix seconds); ``outcomes`` counts every turn
    by outcome. Whoever follows them (the status page's feed) waits for the next one with
    :meth:`wait`. One per app (``AppState.turns``; nothing shared between apps); used on the
    server's loop."""

    def __init__(self, size: int = RECENT_TURNS) -> None:
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self.outcomes: collections.Counter[str] = collections.Counter()
        #: the ``seq`` of the last record (0: none yet)
        self.seq = 0
        self._news = asyncio.Event()

    def add(self, record: dict[str, object]) -> None:
        self.seq += 1
        self.records.append({**record, "seq": self.seq, "at": round(time.time(), 3)})
        self.outcomes[str(record["outcome"])] += 1
        self.wake()

    def since(self, seq: int) -> list[dict[str, Any]]:
        """The records kept whose ``seq`` is over ``seq``."""
        return [r for r in self.records if r["seq"] > seq]

    def wake(self) -> None:
        """End every :meth:`wait` now (a new record, or the server stops)."""
        self._news.set()
        self._news = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Until the next :meth:`wake`, at most ``timeout`` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._news.wait(), timeout)

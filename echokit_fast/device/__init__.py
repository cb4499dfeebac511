"""The device-facing server: EchoKit sessions, turns and record mode (spec §1.4-§6.1).

* :mod:`.session` -- :class:`SessionManager` (one :class:`Session` per device id),
  :class:`Connection`, :class:`Flags`, :class:`Backends`, :class:`Settings`;
* :mod:`.listen` -- VAD hysteresis and the stream-ASR round logic;
* :mod:`.pipeline` -- one answer: LLM -> segments -> parallel TTS -> ordered frames;
* :mod:`.output` -- audio frames to the device (raw / Opus / Opus + vowel) and the hello;
* :mod:`.segmenter` -- the segmenter interface (the §5.8 splitter is the default);
* :mod:`.record` -- record mode and the download paths;
* :mod:`.trace` -- the per-turn trace (JSON log line, Prometheus histograms).

The HTTP/WebSocket routes are in :mod:`echokit_fast.api.device`.
"""

from echokit_fast.device.listen import VadParams
from echokit_fast.device.segmenter import Segmenter
from echokit_fast.device.session import (
    Backends,
    Connection,
    ConnectionGone,
    Flags,
    Session,
    SessionManager,
    Settings,
)

__all__ = [
    "Backends",
    "Connection",
    "ConnectionGone",
    "Flags",
    "Segmenter",
    "Session",
    "SessionManager",
    "Settings",
    "VadParams",
]

"""ServerEvent codec vs msgpack-python (the peer a Python server would use).

The peer packs the structure the wire carries ({"AudioChunk": [list(data)]}): the
list() conversion is part of its real cost, since a `bytes` would be packed as `bin`,
which is not what the reference sends. Each pair is checked to produce the same bytes.

Timed run:
    .venv/bin/python -m pytest benches/bench_protocol.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from echokit_fast.devices.echokit.protocol import decode_event, encode_audio_chunk, encode_event

RNG = random.Random(2024)
PCM = RNG.randbytes(16000)  # a 16 000-byte raw PCM chunk (0.5 s at 16 kHz)
OPUS = RNG.randbytes(100)  # a typical 120 ms Opus packet
TEXT = "Hello! How can I help you today? 你好"  # a short ASR transcript

Enc = Callable[[], bytes]

# (case, ours, peer)
ENCODE_CASES: list[tuple[str, Enc, Enc]] = [
    (
        "AudioChunk 16000 B",
        lambda: encode_event({"AudioChunk": {"data": PCM}}),
        lambda: msgpack.packb({"AudioChunk": [list(PCM)]}),
    ),
    (
        "AudioChunkWithVowel Opus 100 B",
        lambda: encode_event({"AudioChunkWithVowel": {"data": OPUS, "vowel": 2}}),
        lambda: msgpack.packb({"AudioChunkWithVowel": [list(OPUS), 2]}),
    ),
    (
        "ASR text",
        lambda: encode_event({"ASR": {"text": TEXT}}),
        lambda: msgpack.packb({"ASR": [TEXT]}),
    ),
]

FAST_CASES: list[tuple[str, Enc, Enc]] = [
    ("AudioChunk 16000 B", lambda: encode_audio_chunk(PCM), ENCODE_CASES[0][2]),
    ("AudioChunkWithVowel Opus 100 B", lambda: encode_audio_chunk(OPUS, 2), ENCODE_CASES[1][2]),
]

DECODE_CASES: list[tuple[str, Any]] = [
    ("AudioChunk 16000 B", {"AudioChunk": {"data": PCM}}),
    ("AudioChunkWithVowel Opus 100 B", {"AudioChunkWithVowel": {"data": OPUS, "vowel": 2}}),
    ("ASR text", {"ASR": {"text": TEXT}}),
]


@pytest.mark.parametrize(("case", "ours", "peer"), ENCODE_CASES, ids=[c[0] for c in ENCODE_CASES])
def test_encode_event(benchmark: Any, case: str, ours: Enc, peer: Enc) -> None:
    benchmark.group = f"encode {case}"
    benchmark.name = "echokit_fast encode_event"
    assert benchmark(ours) == peer()


@pytest.mark.parametrize(("case", "ours", "peer"), FAST_CASES, ids=[c[0] for c in FAST_CASES])
def test_encode_audio_chunk(benchmark: Any, case: str, ours: Enc, peer: Enc) -> None:
    benchmark.group = f"encode {case}"
    benchmark.name = "echokit_fast encode_audio_chunk"
    assert benchmark(ours) == peer()


@pytest.mark.parametrize(("case", "ours", "peer"), ENCODE_CASES, ids=[c[0] for c in ENCODE_CASES])
def test_encode_msgpack(benchmark: Any, case: str, ours: Enc, peer: Enc) -> None:
    benchmark.group = f"encode {case}"
    benchmark.name = "msgpack.packb (peer)"
    assert benchmark(peer) == ours()


@pytest.mark.parametrize(("case", "event"), DECODE_CASES, ids=[c[0] for c in DECODE_CASES])
def test_decode_event(benchmark: Any, case: str, event: Any) -> None:
    benchmark.group = f"decode {case}"
    benchmark.name = "echokit_fast decode_event"
    assert benchmark(decode_event, encode_event(event)) == event


@pytest.mark.parametrize(("case", "event"), DECODE_CASES, ids=[c[0] for c in DECODE_CASES])
def test_decode_msgpack(benchmark: Any, case: str, event: Any) -> None:
    benchmark.group = f"decode {case}"
    benchmark.name = "msgpack.unpackb (peer)"
    wire = encode_event(event)
    ((name, fields),) = event.items()
    expected = [list(v) if isinstance(v, bytes) else v for v in fields.values()]
    assert benchmark(msgpack.unpackb, wire) == {name: expected}

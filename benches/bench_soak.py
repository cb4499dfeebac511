"""Soak: fuzzed frames and requests against a server that is holding device conversations.

``echokit-fast serve`` runs as the real CLI in a child process on the load bench's set-up (the
embedded Silero VAD, instant stand-in ASR/LLM/TTS servers for the device pipeline; the HTTP
APIs use the embedded Whisper and hibari, loaded by one valid request each before anything is
measured). Then, in order:

1. **idle**: the warmed, idle server is sampled (RSS, open fds, threads): the peer of growth;
2. **peer**: N virtual devices (``echokit-vdev``) hold one round of conversations alone;
3. **soak**: for the duration, the devices hold rounds of conversations back to back while
   fuzzers send WebSocket frames to ``/ws/<id>`` over many short connections (random and
   mutated MessagePack, JSON commands valid and broken, binary audio of odd sizes, invalid
   UTF-8, fragmented and oversized messages, abrupt closes) and HTTP requests (mutated
   multipart uploads to ``/v1/audio/transcriptions`` and ``/v1/audio/vad``, JSON to
   ``/v1/audio/speech`` and ``/v1/audio/stream_speech``, raw requests with broken headers),
   each at ``10,000 / 300 s``; the server is sampled every :data:`SAMPLE_S`;
4. **quiet**: fuzzers and devices stopped, until the open fds are back near idle.

Pass: the server is alive; no HTTP 5xx but the documented ones (:data:`DOCUMENTED_5XX`) and no
WebSocket close 1011; no traceback in its log; every device turn that started got its
``EndResponse``; after the warm-up (:data:`WARMUP_FRACTION` of the soak) RSS, fds and threads
grow slower than :data:`MAX_SLOPE` per minute (checked when that window is at least
:data:`MIN_SLOPE_WINDOW_S`: not in the quick mode), and the fds return to idle. Reported
ratios: turn time and first audio p95 with fuzz / the same devices alone (peer), RSS at the
end / the idle server.

    .venv/bin/python -m pytest benches/bench_soak.py -s --soak                  # 5 min, 100 devices
    .venv/bin/python -m pytest benches/bench_soak.py -s --soak-quick --soak-devices 10   # ~30 s

The test suite runs it without those options as a smoke run (:data:`SMOKE_S` seconds, two
devices, the same checks but the growth slopes), so it cannot rot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import sys
import time
import wave
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from bench_load import SPREAD_S  # noqa: E402
from harness import ServeProcess, free_port, serve_process  # noqa: E402
from instant import instant_backends, limits  # noqa: E402
from vdev import Run, vdev  # noqa: E402

from echokit_fast.devices.echokit import protocol  # noqa: E402

FULL_S, QUICK_S = 300.0, 30.0
#: the suite's run (no --soak option): a few seconds and two devices, so the bench cannot rot
SMOKE_S, SMOKE_DEVICES = 5.0, 2
#: fuzzed WebSocket frames, and fuzzed HTTP requests, per second of soak (10,000 in 5 min)
RATE = 10_000 / FULL_S
WS_WORKERS, HTTP_WORKERS = 8, 8
TURNS = 2  # per device and round
SAMPLE_S = 2.0
WARMUP_FRACTION = 0.2
#: growth per minute after the warm-up above which the soak fails; checked only when that
#: window is at least MIN_SLOPE_WINDOW_S long (shorter, the pools still filling dominate)
MAX_SLOPE = {"rss_mib": 10.0, "fds": 10.0, "threads": 5.0}
MIN_SLOPE_WINDOW_S = 120.0
#: the 5xx statuses the server documents: 503 (an engine or a cap is full, with Retry-After),
#: 507 (record mode: the device's disk quota is used up)
DOCUMENTED_5XX = {503, 507}
#: open fds the quiet server may keep above the idle one (pooled keep-alive connections)
FD_SLACK = 16
QUIET_LIMIT_S = 30.0
#: uvicorn's WebSocket message limit (16 MiB); an oversized frame is one byte more
WS_MAX = 16 * 1024 * 1024
HTTP_MAX = 10 * 1024 * 1024  # the server's upload limit
FUZZ_IDS = [f"fuzz{i:02d}" for i in range(24)]
ODD_IDS = ["%F0%9F%92%A9", "x" * 300, "a%2Fb", "..", "-", "%00"]
WORDS = ["hello", "there", "what", "time", "is", "it", "the", "weather", "in", "paris", "today"]
#: the voices asked for: hibari's bundled one, OpenAI names, unknown ones (not hibari's
#: downloadable voices: a machine without network would answer them 500 as an engine failure)
OPENAI_VOICES = ["alloy", "heart", "nobody", "", "HEART"]


@dataclass(frozen=True)
class Soak:
    duration: float
    devices: int
    frames: int
    requests: int
    seed: int
    quick: bool


@pytest.fixture(scope="module")
def soak(request: pytest.FixtureRequest) -> Soak:
    opt = request.config.getoption
    if not (opt("--soak") or opt("--soak-quick")):  # the suite's smoke run
        count = round(RATE * SMOKE_S)
        return Soak(SMOKE_S, SMOKE_DEVICES, count, count, opt("--soak-seed"), True)
    duration = opt("--soak-duration") or (QUICK_S if opt("--soak-quick") else FULL_S)
    count = max(1, round(RATE * duration))
    return Soak(
        duration, opt("--soak-devices"), count, count, opt("--soak-seed"), opt("--soak-quick")
    )


@dataclass
class Server:
    addr: str
    proc: ServeProcess
    log: Path
    standins: tuple[Any, ...]


@pytest.fixture(scope="module")
def server(soak: Soak, tmp_path_factory) -> Server:
    tmp = tmp_path_factory.mktemp("soak")
    with instant_backends("soak") as backends:
        addr = f"127.0.0.1:{free_port()}"
        cfg = tmp / "config.toml"
        # devices and fuzzers all connect from 127.0.0.1 (the caps are tested on their own)
        cfg.write_text(
            f'addr = "{addr}"\n\n[record]\ndir = "{tmp / "record"}"\n'
            f"{backends.sections}{limits(max(1000, 8 * soak.devices))}"
        )
        log = tmp / "server.log"
        with open(log, "wb") as sink, serve_process(str(cfg), log=sink) as proc:
            yield Server(addr, proc, log, (backends.chat, backends.asr, backends.tts))


# --------------------------------------------------------------------------------------------
# What the fuzzers send
# --------------------------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes, head: int = 64) -> bytes:
    """1-4 byte-level mutations (bit flip, boundary byte, insert, delete, truncate,
    duplicate), mostly within the first ``head`` bytes, where the headers are."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        span = min(len(b), head) if rng.random() < 0.7 else len(b)
        pos = rng.randrange(span) if span else 0
        op = rng.randrange(6)
        if op == 0 and b:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[pos] = rng.choice((0x00, 0xFF, 0x7F, 0x80))
        elif op == 2:
            b[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del b[pos : pos + rng.randint(1, 16)]
        elif op == 4:
            del b[rng.randint(0, len(b)) :]
        else:
            b[pos:pos] = b[pos : pos + rng.randint(1, 64)]
    return bytes(b)


def random_object(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bytes", "bool", "none"] + ["list", "map"] * (depth < 4)
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.0, -0.0, float("inf"), float("nan"), rng.uniform(-1e9, 1e9)])
    if kind == "str":
        return rng.choice(["", "StartChat", "AudioChunk", "😀" * rng.randint(1, 50), "x" * 70000])
    if kind == "bytes":
        return rng.randbytes(rng.randint(0, 2048))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [random_object(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    return {str(random_object(rng, 3))[:20]: random_object(rng, depth + 1) for _ in range(3)}


def server_event(rng: random.Random) -> bytes:
    """A real ServerEvent as the server writes it (sent back to it, often mutated)."""
    event = rng.choice(
        [
            "EndResponse",
            "EndVad",
            {"ASR": {"text": "hello"}},
            {"StartAudio": {"text": "hi"}},
            {"AudioChunk": {"data": rng.randbytes(rng.randint(0, 400))}},
        ]
    )
    return protocol.encode_event(event)


def audio_bytes(rng: random.Random) -> bytes:
    size = rng.choice([1, 3, 511, 513, 8191, 16383, 16384, 16385, rng.randint(0, 40000)])
    kind = rng.random()
    if kind < 0.4:
        return bytes(size)  # silence
    if kind < 0.7:
        t = np.arange(size // 2) / 16000
        tone = (np.sin(2 * np.pi * rng.uniform(100, 3000) * t) * 12000).astype("<i2")
        return tone.tobytes() + bytes(size % 2)
    return rng.randbytes(size)


def json_command(rng: random.Random) -> str:
    event = rng.choice(["StartChat", "Submit", "Text", "Select", "StartRecord", "Nope", ""])
    cmd: dict[str, Any] = {"event": event}
    if event == "Text":
        cmd["input"] = rng.choice(
            [" ".join(rng.choices(WORDS, k=rng.randint(1, 8))), "", "é" * 5000, 42, None]
        )
    if event == "Select":
        cmd["index"] = rng.choice([0, -1, 2**70, "0"])
    text = json.dumps(cmd, ensure_ascii=rng.random() < 0.5)
    r = rng.random()
    if r < 0.15:
        return text[: rng.randint(0, len(text))]  # truncated
    if r < 0.2:
        return "[" * 12_000 + "]" * 12_000  # deep, yet under the text-frame limit
    if r < 0.25:
        return '{"event": "Text", "input": "\\ud800"}'  # a lone surrogate
    if r < 0.3:
        return (
            json.dumps([cmd, cmd])
            if rng.random() < 0.5
            else json.dumps(random_object(rng), default=repr)
        )
    return text


@dataclass
class Frame:
    """One WebSocket message: ``data`` sent as text (``text``), maybe in fragments."""

    data: bytes | str
    text: bool | None = None
    fragments: int = 1


def ws_frame(rng: random.Random, oversized: bytes) -> Frame:
    r = rng.random()
    if r < 0.002:
        return Frame(oversized)
    if r < 0.25:
        return Frame(audio_bytes(rng))
    if r < 0.4:
        packed = msgpack.packb(random_object(rng), use_bin_type=rng.random() < 0.5)
        return Frame(mutate(rng, packed) if rng.random() < 0.5 else packed)
    if r < 0.5:
        event = server_event(rng)
        return Frame(mutate(rng, event) if rng.random() < 0.7 else event)
    if r < 0.85:
        return Frame(json_command(rng))
    if r < 0.93:
        invalid = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b'{"event":"\xe2\x82"}'])
        return Frame(invalid, text=True)
    data: bytes | str = json_command(rng) if rng.random() < 0.5 else audio_bytes(rng)
    return Frame(data, fragments=rng.randint(2, 5))


def ws_path(rng: random.Random) -> str:
    flags = [f for f in ("reconnect", "opus", "vowel", "stream_asr") if rng.random() < 0.5]
    values = ["true"] * 8 + ["false", "maybe", ""]
    query = [f"{f}={rng.choice(values)}" for f in flags]
    if rng.random() < 0.03:
        query.append("record=true")
    if rng.random() < 0.1:
        query.append(rng.choice(["x=%ff", "opus", "=", "stream_asr=true&stream_asr=false"]))
    device = rng.choice(ODD_IDS if rng.random() < 0.05 else FUZZ_IDS)
    return f"/ws/{device}" + ("?" + "&".join(query) if query else "")


def wav_file(rng: random.Random, *, valid: bool) -> bytes:
    """A short WAV (silence or a tone, a rate, channel count and width of its own); unless
    ``valid``, mutated (byte-level, or a header field set to an edge value)."""
    rate = rng.choice([8000, 16000, 22050, 44100, 48000])
    channels, width = rng.choice([1, 1, 2]), rng.choice([2, 2, 1, 3, 4])
    frames = rng.randint(0, rate // 4)
    buf = BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(frames * channels * width))
    data = bytearray(buf.getvalue())
    if valid:
        return bytes(data)
    if rng.random() < 0.5:
        return mutate(rng, bytes(data), head=44)
    offset, fmt = rng.choice(
        [(4, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (32, "<H"), (34, "<H")]
    )
    top = 2 ** (8 * struct.calcsize(fmt)) - 1
    struct.pack_into(fmt, data, offset, min(top, rng.choice([0, 1, 3, 999, 384_001, top])))
    if rng.random() < 0.3:  # the data chunk's size
        struct.pack_into("<I", data, 40, rng.choice([0, 1, 0xFFFFFFFF, 2**31]))
    return bytes(data)


def multipart(rng: random.Random, file_field: str, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body (``fields`` then the WAV), maybe mutated, and its
    Content-Type (maybe broken)."""
    boundary = rng.choice(["soakboundary", "b" * 70, "x", "-" * 10 + str(rng.random())])
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    name = file_field if rng.random() < 0.9 else rng.choice(["files", "", "audio file"])
    filename = rng.choice(["a.wav", "", "😀.wav", "../../x", "a" * 300])
    valid = rng.random() < 0.1
    body = (
        "".join(parts).encode()
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
    )
    body += wav_file(rng, valid=valid) + f"\r\n--{boundary}--\r\n".encode()
    if not valid and rng.random() < 0.3:
        body = mutate(rng, body, head=len(body))
    ctype = f"multipart/form-data; boundary={boundary}"
    r = rng.random()
    if r < 0.05:
        ctype = "multipart/form-data"
    elif r < 0.1:
        ctype = rng.choice(["application/json", "multipart/form-data; boundary=", "text/plain"])
    elif r < 0.12:
        body = body.replace(b"\r\n", b"\n")
    return body, ctype


def speech_body(rng: random.Random) -> bytes:
    body: dict[str, Any] = {}
    if rng.random() < 0.9:
        body["input"] = rng.choice(
            [" ".join(rng.choices(WORDS, k=rng.randint(1, 10)))] * 6
            + ["", "x" * 5000, 5, None, ["a"], "héllo 😀 世界", "\u0000"]
        )
    if rng.random() < 0.7:
        body["model"] = rng.choice(["tts-1", "", 1])
    for key, values in (
        ("voice", [*OPENAI_VOICES, 3]),
        ("response_format", ["wav", "pcm", "mp3", "", None]),
        ("speed", [1.0, 0.25, 4, 0.1, 100, "fast", -1]),
        ("speaker", ["heart", "nobody", ""]),
        ("sample_rate", [16000, 32000, 7, -1, "x"]),
    ):
        if rng.random() < 0.3:
            body[key] = rng.choice(values)
    raw = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()
    r = rng.random()
    if r < 0.1:
        return mutate(rng, raw, head=len(raw))
    if r < 0.13:
        return b"[" * 100_000 + b"]" * 100_000  # deeper than a recursive JSON parser goes
    if r < 0.16:
        return b"\xff\xfe" + raw
    if r < 0.19:
        return rng.choice([b'{"input": "hi", "speed": NaN}', b'{"input": 1e999}', b"", b"null"])
    return raw


RAW_HEADERS = [
    "Content-Length: abc",
    "Content-Length: -1",
    "Content-Length: 99999999999999999999999",
    "Content-Length: 5\r\nContent-Length: 6",
    "Transfer-Encoding: chunked\r\nContent-Length: 5",
    "Transfer-Encoding: gzip, chunked",
    "X-No-Colon",
    "Bad Name: x",
    "X-Nul: a\x00b",
    "X-Folded: a\r\n  continued",
    "X-Long: " + "a" * 70_000,
    "\r\n".join(f"X-{i}: {i}" for i in range(300)),
    "Content-Type: multipart/form-data; boundary=" + "b" * 300,
    "Content-Type: multipart/form-data; boundary=x; charset=bogus",
    "Expect: 100-continue",
    "Host: \xff\xfe",
]


def raw_request(rng: random.Random) -> bytes:
    """An HTTP/1.1 request with broken headers, framing or request line."""
    path = rng.choice(["/v1/audio/vad", "/v1/audio/transcriptions", "/v1/audio/speech", "/ws/x"])
    method = rng.choice(["POST"] * 6 + ["GET", "PUT", "FOO", "P OST"])
    version = rng.choice(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2.0", "HTTP/9", ""])
    target = rng.choice([path, path + "%00", path + "\xff", "http://evil" + path, "*"])
    headers = ["Host: soak", *rng.sample(RAW_HEADERS, rng.randint(1, 3))]
    body = rng.choice([b"", b"0\r\n\r\n", b"zz\r\nxx\r\n", b"hello", bytes(rng.randint(0, 2000))])
    head = f"{method} {target} {version}\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


# --------------------------------------------------------------------------------------------
# The fuzzers
# --------------------------------------------------------------------------------------------


@dataclass
class Fuzz:
    """What one fuzzer sent and what came back."""

    target: int
    rate: float
    sent: int = 0
    connections: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: responses that fail the soak: (what was sent, what came back)
    failures: list[tuple[str, str]] = field(default_factory=list)
    _tickets: int = 0
    _t0: float = field(default_factory=time.monotonic)

    async def ticket(self) -> bool:
        """Wait for the next send slot (paced at ``rate``); False once ``target`` were sent."""
        if self.sent >= self.target:
            return False
        self._tickets += 1
        await asyncio.sleep(max(0.0, self._t0 + self._tickets / self.rate - time.monotonic()))
        return self.sent < self.target

    def fail(self, sent: str, got: str) -> None:
        self.failures.append((sent[:300], got[:500]))


async def ws_fuzzer(addr: str, rng: random.Random, fuzz: Fuzz, oversized: bytes) -> None:
    while fuzz.sent < fuzz.target:
        path = ws_path(rng)
        fuzz.connections += 1
        try:
            async with connect(
                f"ws://{addr}{path}",
                max_size=None,
                compression=None,
                open_timeout=20,
                close_timeout=5,
                ping_interval=None,
            ) as ws:
                reader = asyncio.create_task(_drain_ws(ws))
                for _ in range(rng.randint(1, 40)):
                    if not await fuzz.ticket():
                        break
                    frame = ws_frame(rng, oversized)
                    if frame.fragments > 1:
                        step = max(1, len(frame.data) // frame.fragments)
                        pieces = [frame.data[i : i + step] for i in range(0, len(frame.data), step)]
                        await ws.send(pieces or [frame.data], text=frame.text)
                    else:
                        await ws.send(frame.data, text=frame.text)
                    fuzz.sent += 1
                ending = rng.random()
                if ending < 0.2:
                    ws.transport.abort()
                elif ending < 0.3:
                    await ws.close(rng.choice([1001, 3000, 4999]), "soak")
                await asyncio.wait([reader], timeout=5 if ending >= 0.3 else 0)
                reader.cancel()
            code = ws.close_code
            fuzz.outcomes[f"close {code}"] += 1
            if code == 1011:
                fuzz.fail(path, f"close {code} {ws.close_reason}")
        except InvalidStatus as exc:
            status = exc.response.status_code
            fuzz.outcomes[f"handshake {status}"] += 1
            if status >= 500 and status not in DOCUMENTED_5XX:
                fuzz.fail(path, f"handshake {status}")
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            fuzz.outcomes[f"close {code}"] += 1
            if code == 1011:
                fuzz.fail(path, f"close 1011 {exc.rcvd.reason if exc.rcvd else ''}")
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            fuzz.outcomes[type(exc).__name__] += 1


async def _drain_ws(ws: Any) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def http_fuzzer(addr: str, rng: random.Random, fuzz: Fuzz, client: httpx.AsyncClient) -> None:
    base = f"http://{addr}"
    while await fuzz.ticket():
        r = rng.random()
        fuzz.connections += 1
        try:
            if r < 0.15:
                body = raw_request(rng)
                what, (status, answer) = "raw", await _raw(addr, body)
            elif r < 0.35:
                fields = {
                    "model": rng.choice(["whisper-1", ""]),
                    "language": rng.choice(["en", "zh", "xx", ""]),
                    "response_format": rng.choice(["json", "text", "srt", "vtt", "bogus"]),
                    "temperature": rng.choice(["0", "0.5", "2", "nan", "x"]),
                }
                body, ctype = multipart(rng, "file", fields)
                what = "transcriptions"
                url = base + "/v1/audio/transcriptions"
                status, answer = await _post(client, url, body, ctype, rng)
            elif r < 0.6:
                body, ctype = multipart(rng, "audio", {})
                if rng.random() < 0.003:
                    body = bytes(HTTP_MAX + 1)
                what = "vad"
                status, answer = await _post(client, base + "/v1/audio/vad", body, ctype, rng)
            else:
                path = "/v1/audio/speech" if rng.random() < 0.8 else "/v1/audio/stream_speech"
                body, ctype = speech_body(rng), "application/json"
                what = path
                status, answer = await _post(client, base + path, body, ctype, rng)
        except httpx.HTTPError as exc:
            fuzz.outcomes[type(exc).__name__] += 1
            fuzz.sent += 1
            continue
        fuzz.sent += 1
        fuzz.outcomes[f"{what} {status}"] += 1
        if isinstance(status, int) and status >= 500 and status not in DOCUMENTED_5XX:
            fuzz.fail(f"{what} {body[:200]!r}", f"HTTP {status} {answer[:300]!r}")


async def _post(
    client: httpx.AsyncClient, url: str, body: bytes, ctype: str, rng: random.Random
) -> tuple[int, bytes]:
    """POST; the response is read to its end (returned), or for some only its first chunk."""
    async with client.stream("POST", url, content=body, headers={"content-type": ctype}) as resp:
        if rng.random() < 0.1 and resp.status_code < 300:
            async for _ in resp.aiter_raw():
                break  # hang up mid-response
            return resp.status_code, b""
        return resp.status_code, await resp.aread()


async def _raw(addr: str, request: bytes) -> tuple[int | str, bytes]:
    host, port = addr.rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError as exc:
        return type(exc).__name__, b""
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    except (TimeoutError, OSError):
        return "no answer", b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.split()
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else "closed"), line


# --------------------------------------------------------------------------------------------
# Devices, samples, the run
# --------------------------------------------------------------------------------------------


def device_round(addr: str, question: Path, out: Path, devices: int, first: bool) -> Run:
    args = ("--devices", str(devices), "--stagger", f"{SPREAD_S / devices:.4f}", "--timeout", "60")
    return vdev(addr, question, question, out=out, args=args + (() if first else ("--no-hello",)))


@dataclass
class Turns:
    started: int
    ended: int
    failed_devices: list[dict]
    duration_s: list[float]
    latency_ms: list[float]


def turns_of(runs: list[Run]) -> Turns:
    started = ended = 0
    failed: list[dict] = []
    duration, latency = [], []
    for run in runs:
        started += len({(e["device"], e["turn"]) for e in run.of("start_chat") if e["turn"]})
        ended += len({(e["device"], e["turn"]) for e in run.of("end_response") if e["turn"]})
        failed += [d for d in run.summary["devices"] if not d["ok"]]
        for d in run.summary["devices"]:
            for t in d["turns"]:
                if t.get("t_end_response") is not None and t.get("t_start_chat") is not None:
                    duration.append(t["t_end_response"] - t["t_start_chat"])
                if t.get("first_audio_latency") is not None:
                    latency.append(t["first_audio_latency"] * 1e3)
    return Turns(started, ended, failed, duration, latency)


def tracebacks(log: str) -> Counter[str]:
    """The tracebacks in a server log, by the log line before each and its exception line."""
    lines = log.splitlines()
    found: Counter[str] = Counter()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            j = i + 1
            while j < len(lines) and (
                not lines[j]
                or lines[j][0] in " \t"
                or "Traceback" in lines[j]
                or lines[j].startswith(("During handling", "The above"))
            ):
                j += 1
            before = lines[i - 1][:120] if i else ""
            found[f"{before} -> {lines[j][:200] if j < len(lines) else '?'}"] += 1
    return found


def sample(proc: ServeProcess) -> dict[str, float]:
    return {
        "t": time.monotonic(),
        "rss_mib": proc.rss_bytes() / 2**20,
        "fds": proc.open_fds(),
        "threads": proc.threads(),
    }


async def sampler(proc: ServeProcess, out: list[dict], standins: tuple[Any, ...]) -> None:
    while True:
        out.append(sample(proc))
        for standin in standins:  # they keep every request; the soak needs none of them
            standin.requests.clear()
        await asyncio.sleep(SAMPLE_S)


async def warm_up(addr: str) -> None:
    """One valid request per API, so the models they load are in the idle figures."""
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=f"http://{addr}", timeout=120) as client:
        wav = wav_file(rng, valid=True)
        for path, field_name in (("/v1/audio/transcriptions", "file"), ("/v1/audio/vad", "audio")):
            r = await client.post(path, files={field_name: ("a.wav", wav, "audio/wav")})
            assert r.status_code == 200, (path, r.text)
        r = await client.post("/v1/audio/speech", json={"model": "x", "input": "Warm up."})
        assert r.status_code == 200, r.text


async def until(check: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


def slopes(samples: list[dict], start: float) -> dict[str, float]:
    """Least-squares growth per minute of each metric over the samples from ``start``."""
    window = [s for s in samples if s["t"] >= start]
    if len(window) < 3:
        return {key: float("nan") for key in MAX_SLOPE}
    t = np.array([s["t"] for s in window]) / 60
    return {key: float(np.polyfit(t, [s[key] for s in window], 1)[0]) for key in MAX_SLOPE}


async def run_soak(server: Server, soak: Soak, question: Path, tmp: Path) -> dict[str, Any]:
    addr, proc = server.addr, server.proc
    await warm_up(addr)
    idle = []
    for _ in range(3):
        idle.append(sample(proc))
        await asyncio.sleep(1.0)

    peer = [await asyncio.to_thread(device_round, addr, question, tmp / "peer", soak.devices, True)]

    rng = random.Random(soak.seed)
    ws, http = Fuzz(soak.frames, RATE), Fuzz(soak.requests, RATE)
    samples: list[dict] = []
    sampling = asyncio.create_task(sampler(proc, samples, server.standins))
    started = time.monotonic()
    deadline = started + soak.duration
    runs: list[Run] = []

    async def devices() -> None:
        while time.monotonic() < deadline or ws.sent < ws.target or http.sent < http.target:
            out = tmp / f"soak-{len(runs)}"
            runs.append(
                await asyncio.to_thread(device_round, addr, question, out, soak.devices, False)
            )

    async with httpx.AsyncClient(timeout=30) as client:
        work: list[Awaitable[None]] = [devices()]
        oversized = bytes(WS_MAX + 1)
        work += [
            ws_fuzzer(addr, random.Random(rng.random()), ws, oversized) for _ in range(WS_WORKERS)
        ]
        work += [
            http_fuzzer(addr, random.Random(rng.random()), http, client)
            for _ in range(HTTP_WORKERS)
        ]
        await asyncio.gather(*work)
    ended = time.monotonic()
    sampling.cancel()
    quiet = await until(lambda: proc.open_fds() <= idle[-1]["fds"] + FD_SLACK, QUIET_LIMIT_S)
    end = sample(proc)

    crashes = tracebacks(server.log.read_text(errors="replace"))
    alone, fuzzed = turns_of(peer), turns_of(runs)
    warm = started + WARMUP_FRACTION * (ended - started)
    growth = slopes(samples, warm)

    def p(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 1) if values else float("nan")

    return {
        "mode": "quick" if soak.quick else "full",
        "devices": soak.devices,
        "soak_s": round(ended - started, 1),
        "alive": proc.proc.poll() is None,
        "log": str(server.log),
        "tracebacks": dict(crashes.most_common()),
        "ws": {
            "frames": ws.sent,
            "connections": ws.connections,
            "outcomes": dict(ws.outcomes.most_common()),
            "failures": ws.failures[:10],
        },
        "http": {
            "requests": http.sent,
            "outcomes": dict(sorted(http.outcomes.items())),
            "failures": http.failures[:10],
        },
        "turns": {
            "peer": {"started": alone.started, "ended": alone.ended},
            "soak": {"started": fuzzed.started, "ended": fuzzed.ended, "rounds": len(runs)},
            "failed_devices": [
                d.get("error") for d in alone.failed_devices + fuzzed.failed_devices
            ][:10],
        },
        "turn_s_p50": {"peer": p(alone.duration_s, 50), "soak": p(fuzzed.duration_s, 50)},
        "first_audio_p95_ms": {"peer": p(alone.latency_ms, 95), "soak": p(fuzzed.latency_ms, 95)},
        "ratios": {
            "turn_s_p50_soak_vs_peer": round(p(fuzzed.duration_s, 50) / p(alone.duration_s, 50), 3),
            "first_audio_p95_soak_vs_peer": round(
                p(fuzzed.latency_ms, 95) / p(alone.latency_ms, 95), 3
            ),
            "rss_end_vs_idle": round(end["rss_mib"] / idle[-1]["rss_mib"], 3),
        },
        "growth_per_min": {k: round(v, 3) for k, v in growth.items()},
        "growth_checked": ended - warm >= MIN_SLOPE_WINDOW_S,
        "idle": {k: round(v, 1) for k, v in idle[-1].items() if k != "t"},
        "peak": {k: round(max(s[k] for s in samples), 1) for k in MAX_SLOPE},
        "quiet": {k: round(v, 1) for k, v in end.items() if k != "t"} | {"settled": quiet},
        "samples": len(samples),
    }


def test_soak_fuzz_under_device_load_ours(benchmark, soak, server, question, tmp_path) -> None:
    benchmark.group = f"soak: {soak.devices} devices + fuzz, {soak.duration:.0f} s"
    report: dict[str, Any] = {}
    benchmark.pedantic(
        lambda: report.update(asyncio.run(run_soak(server, soak, question, tmp_path))),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(report)
    print(f"\nsoak: {json.dumps(report)}")
    assert report["alive"], "the server died"
    assert not report["tracebacks"], report["tracebacks"]
    assert not report["ws"]["failures"] and not report["http"]["failures"], report
    assert report["ws"]["frames"] >= soak.frames and report["http"]["requests"] >= soak.requests
    turns = report["turns"]
    assert not turns["failed_devices"], turns
    for phase in ("peer", "soak"):
        assert turns[phase]["started"] == turns[phase]["ended"] > 0, turns
    if report["growth_checked"]:
        for key, limit in MAX_SLOPE.items():
            assert report["growth_per_min"][key] <= limit, (key, report["growth_per_min"])
    assert report["quiet"]["settled"], (report["idle"], report["quiet"])

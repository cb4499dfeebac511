"""A xiaozhi-esp32 board as the tests see it: the firmware's wire format over a real WebSocket.

The handshake carries the firmware's headers (``Authorization: Bearer``, ``Protocol-Version``,
``Device-Id``, ``Client-Id``; no extension offered); the hello and the ``listen``/``abort``
messages are the firmware's strings, built by concatenation as it builds them (``session_id``
first); the microphone is 16 kHz mono Opus in 60 ms packets (the project's own encoder), one
packet per binary frame in the connection's binary protocol version, silence sent as DTX
packets (the TOC byte alone) as the firmware's encoder does with DTX on. What the server
sends is kept in order as :class:`Received` items (JSON messages and audio frames with the
time each arrived); the server's MCP requests are answered at once by the board's
:attr:`Board.mcp` (by default the firmware's MCP server with no tools) and kept in
:attr:`Board.mcp_requests`; downlink audio is decoded at the rate the server hello announced.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from echokit_fast.audio import OpusDecoder, OpusEncoder, pcm16_to_float

SR = 16000
FRAME = 960  # 60 ms at 16 kHz
FRAME_S = 0.06
DEVICE_ID = "a0:b1:c2:d3:e4:f5"
FIRMWARE_VERSION = "2.4.2"


def hello(version: int = 1) -> str:
    """The firmware's hello (key order as it writes it)."""
    return (
        '{"type":"hello","version":' + str(version) + ","
        '"features":{"mcp":true,"glyph_push":false},"transport":"websocket",'
        '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
    )


def frame(packet: bytes, version: int) -> bytes:
    """An Opus packet in the binary protocol ``version``."""
    if version == 2:
        return struct.pack(">HHIII", 2, 0, 0, 0, len(packet)) + packet
    if version == 3:
        return struct.pack(">BBH", 0, 0, len(packet)) + packet
    return packet


def unframe(data: bytes, version: int) -> bytes:
    if version == 2:
        ver, kind, _, _, size = struct.unpack_from(">HHIII", data)
        assert (ver, kind) == (2, 0) and len(data) == 16 + size, data[:16]
        return data[16:]
    if version == 3:
        kind, _, size = struct.unpack_from(">BBH", data)
        assert kind == 0 and len(data) == 4 + size, data[:4]
        return data[4:]
    return data


async def ota(addr: str, device_id: str = DEVICE_ID, client_id: str = "") -> httpx.Response:
    """The firmware's boot-time OTA request."""
    body = {
        "version": 2,
        "mac_address": device_id,
        "uuid": client_id,
        "application": {"name": "xiaozhi", "version": FIRMWARE_VERSION},
        "board": {"type": "bread-compact-wifi", "name": "bread-compact-wifi"},
    }
    headers = {
        "Activation-Version": "1",
        "Device-Id": device_id,
        "Client-Id": client_id,
        "User-Agent": f"bread-compact-wifi/{FIRMWARE_VERSION}",
        "Accept-Language": "en-US",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient() as client:
        return await client.post(f"http://{addr}/xiaozhi/ota/", json=body, headers=headers)


def no_tools(request: dict[str, Any]) -> dict[str, Any] | None:
    """The firmware's MCP server with no tools: ``initialize``, an empty ``tools/list``, and
    the firmware's error (no ``code``) for anything else."""
    rid, method = request["id"], request["method"]
    if method == "initialize":
        result = {
            "protocolVersion": "2024-11-05",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bread-compact-wifi", "version": FIRMWARE_VERSION},
        }
        return {"jsonrpc": "2.0", "id": rid, "result": result}
    if method == "tools/list":
        return {"jsonrpc": "2.0", "id": rid, "result": {"tools": []}}
    return {"jsonrpc": "2.0", "id": rid, "error": {"message": f"Unknown tool: {method}"}}


@dataclass
class Received:
    """One frame from the server: a JSON message or an audio packet."""

    at: float
    message: dict[str, Any] | None = None
    packet: bytes | None = None

    def is_tts(self, state: str) -> bool:
        m = self.message
        return m is not None and m.get("type") == "tts" and m.get("state") == state


class Board:
    """A xiaozhi board on one WebSocket (after the hello exchange)."""

    def __init__(
        self,
        ws: ClientConnection,
        server_hello: dict[str, Any],
        version: int,
        mcp: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        self.ws = ws
        self.server_hello = server_hello
        self.version = version
        self.session_id = server_hello.get("session_id", "")
        params = server_hello.get("audio_params", {})
        self.rate = params.get("sample_rate", 24000)
        self._enc = OpusEncoder(SR, 60)
        self._got: asyncio.Queue[Received | BaseException] = asyncio.Queue()
        #: the board's MCP server: a JSON-RPC request -> the reply (None: no reply at all)
        self.mcp = mcp or no_tools
        self.mcp_requests: list[dict[str, Any]] = []
        self.listed = asyncio.Event()  # the last page of tools/list was answered
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        """Everything the server sends, stamped as it arrives (also while the board speaks)."""
        try:
            while True:  # until the Close: recv raises ConnectionClosed (OK for a 1000)
                data = await self.ws.recv()
                at = time.monotonic()
                if isinstance(data, bytes):
                    self._got.put_nowait(Received(at, packet=unframe(data, self.version)))
                    continue
                msg = json.loads(data)
                if msg.get("type") == "mcp":  # answered at once, as the firmware does
                    await self._mcp(msg["payload"])
                else:
                    self._got.put_nowait(Received(at, message=msg))
        except Exception as exc:  # (for recv to raise)
            self._got.put_nowait(exc)

    @staticmethod
    async def connect(
        addr: str,
        *,
        device_id: str = DEVICE_ID,
        client_id: str | None = None,
        token: str = "",
        version: int = 1,
        path: str = "/xiaozhi/v1/",
    ) -> ClientConnection:
        """The upgrade with the firmware's headers (no hello yet)."""
        headers = {"Protocol-Version": str(version), "Device-Id": device_id}
        headers["Client-Id"] = client_id or str(uuid.uuid4())
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        return await connect(
            f"ws://{addr}{path}", additional_headers=headers, compression=None, max_size=2**22
        )

    @classmethod
    async def open(
        cls,
        addr: str,
        *,
        version: int = 1,
        mcp: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
        **kw: Any,
    ) -> Board:
        ws = await cls.connect(addr, version=version, **kw)
        await ws.send(hello(version))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return cls(ws, reply, version, mcp)

    async def _mcp(self, request: dict[str, Any]) -> None:
        self.mcp_requests.append(request)
        reply = self.mcp(request)
        if reply is not None:
            await self.send(self._msg('"type":"mcp","payload":' + json.dumps(reply)))
        result = reply.get("result") if reply is not None else None
        if request.get("method") == "tools/list" and "nextCursor" not in (result or {}):
            self.listed.set()

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    def _msg(self, rest: str) -> str:
        return '{"session_id":"' + self.session_id + '",' + rest + "}"

    async def listen_start(self, mode: str = "auto") -> None:
        await self.send(self._msg('"type":"listen","state":"start","mode":"' + mode + '"'))

    async def listen_stop(self) -> None:
        await self.send(self._msg('"type":"listen","state":"stop"'))

    async def abort(self) -> None:
        await self.send(self._msg('"type":"abort"'))

    async def speak(self, pcm16: bytes, *, pace: float = 0.25) -> int:
        """Stream ``pcm16`` as 60 ms Opus packets, ``pace`` x real time (all-zero frames as
        DTX packets); the samples sent (whole frames)."""
        s16 = np.frombuffer(pcm16, "<i2")
        s16 = np.concatenate([s16, np.zeros(-len(s16) % FRAME, np.int16)])
        start = time.monotonic()
        for i in range(0, len(s16), FRAME):
            chunk = s16[i : i + FRAME]
            packet = self._enc.push(chunk)[0]
            if not chunk.any():
                packet = packet[:1]  # DTX: the TOC byte alone
            await self.ws.send(frame(packet, self.version))
            due = start + (i // FRAME + 1) * FRAME_S * pace
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        return len(s16)

    async def recv(self, timeout: float = 30) -> Received:
        got = await asyncio.wait_for(self._got.get(), timeout)
        if isinstance(got, BaseException):
            raise got
        return got

    async def until(self, state: str = "stop", timeout: float = 30) -> list[Received]:
        """What arrives up to and including the next ``tts`` message of ``state``."""
        got = []
        while True:
            got.append(await self.recv(timeout))
            if got[-1].is_tts(state):
                return got

    def decode(self, packets: list[bytes]) -> np.ndarray:
        """The downlink packets decoded as the board does (a fresh decoder per turn)."""
        dec = OpusDecoder(self.rate)
        parts = [dec.decode(p) for p in packets]
        return np.concatenate(parts) if parts else np.empty(0, np.float32)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def messages(got: list[Received]) -> list[dict[str, Any]]:
    return [r.message for r in got if r.message is not None]


def packets(got: list[Received]) -> list[bytes]:
    return [r.packet for r in got if r.packet is not None]


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * SR))


def as_float(pcm16: bytes) -> np.ndarray:
    return pcm16_to_float(pcm16)

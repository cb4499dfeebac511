"""The instant stand-in backends the load benches run a server on (bench_load, bench_soak,
bench_reference): an OpenAI-compatible ASR that always hears "hello there", a chat LLM that
answers at once, a ``stream_gsv`` TTS that speaks at once -- each a loopback server in the
pytest process, so what is loaded is the server under test, not its backends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# (tests/ is on the path: benches/conftest.py puts it there)
from harness import running_server
from standins import ASRServer, ChatServer, TTSServer

__all__ = ["ANSWER", "Instant", "instant_backends", "limits"]

#: what the LLM stand-in answers: two spoken segments
ANSWER = "Sure. Here is a short answer for you, spoken in two parts."


@dataclass
class Instant:
    """The running stand-ins and the config sections ([asr], [tts], [llm]) that use them."""

    chat: ChatServer
    asr: ASRServer
    tts: TTSServer
    sections: str


@contextmanager
def instant_backends(speaker: str = "load") -> Iterator[Instant]:
    chat, stt, speech = ChatServer(), ASRServer("hello there"), TTSServer()
    chat.default.deltas = [ANSWER]
    with (
        running_server(chat.app) as chat_addr,
        running_server(stt.app) as asr_addr,
        running_server(speech.app) as tts_addr,
    ):
        yield Instant(
            chat,
            stt,
            speech,
            f"""
[asr]
platform = "openai"
url = "http://{asr_addr}/v1/audio/transcriptions"

[tts]
platform = "stream_gsv"
url = "http://{tts_addr}/v1/audio/stream_speech"
speaker = "{speaker}"

[llm]
platform = "openai_chat"
url = "http://{chat_addr}/v1/chat/completions"
history = 5
""",
        )


def limits(connections: int) -> str:
    """``[limits]`` for ``connections`` sockets, every one of them from 127.0.0.1."""
    return f"""
[limits]  # every device connects from 127.0.0.1
max_connections = {connections}
max_connections_per_ip = {connections}
"""

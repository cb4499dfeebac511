"""The embedded engines as fixtures shared by the tests and the benches (imported into both
conftest files): each is loaded once per test session."""

from __future__ import annotations

import pytest

from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.asr.local import engine as asr
from echokit_fast.backends.tts.local import engine as tts

__all__ = ["speaker", "whisper"]


@pytest.fixture(scope="session")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> asr.LocalWhisper:
    """Whisper base pinned to English (the language every spoken test uses)."""
    cache = tmp_path_factory.getbasetemp() / "asr-models"
    return asr.LocalWhisper.from_config(LocalASR(language="en"), cache_dir=cache)


@pytest.fixture(scope="session")
def speaker() -> tts.LocalSpeaker:
    """The embedded TTS engine on its default voice."""
    return tts.from_config(None)

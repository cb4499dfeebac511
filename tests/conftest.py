"""Shared fixtures: spec data paths and real servers on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import running_server

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SPEC = ROOT.parent / "shared" / "spec"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    if not SPEC.is_dir():
        pytest.fail(f"the shared spec folder is missing: {SPEC}")
    return SPEC


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """`serve(app) -> "127.0.0.1:PORT"`; every server started is stopped after the test."""
    stack: list = []

    def start(app) -> str:
        cm = running_server(app)
        addr = cm.__enter__()
        stack.append(cm)
        return addr

    yield start
    while stack:
        stack.pop().__exit__(None, None, None)

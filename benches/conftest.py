"""Options of the bench suites (pytest loads this for any run that names benches/)."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--load-devices",
        type=int,
        default=int(os.environ.get("ECHOKIT_LOAD_DEVICES", "20")),
        help="virtual devices in benches/bench_load.py (default 20, or $ECHOKIT_LOAD_DEVICES)",
    )


@pytest.fixture(scope="session")
def load_devices(request: pytest.FixtureRequest) -> int:
    n = request.config.getoption("--load-devices")
    if n < 1:
        raise pytest.UsageError(f"--load-devices must be >= 1, got {n}")
    return n

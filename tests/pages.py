"""Shared by the browser tests: Debian's Chromium (scripts/setup.sh installs it; Playwright
never downloads a browser of its own) and a phone's viewport, the size every page is tested at.

Playwright is imported only when a browser is asked for: the conftest imports this module, and
the release wheel's check (scripts/wheel_check.sh) runs tests without Playwright installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

__all__ = ["ARTIFACTS", "CHROMIUM", "PHONE", "browser", "screenshot"]

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
#: where the browser tests keep their screenshots ($ECHOKIT_TEST_ARTIFACTS; by default
#: .artifacts/ in the checkout, which git ignores): kept after the run, for a person or a CI job
ARTIFACTS = Path(
    os.environ.get("ECHOKIT_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / ".artifacts")
)


def screenshot(page: Page, name: str) -> Path:
    """The whole page as ``ARTIFACTS/name.png`` (replaced on each run)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium without a microphone."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()

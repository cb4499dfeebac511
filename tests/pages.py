"""Shared by the browser tests: Debian's Chromium (scripts/setup.sh installs it; Playwright
never downloads a browser of its own) and a phone's viewport, the size every page is tested at.

Playwright is imported only when a browser is asked for: the conftest imports this module, and
the release wheel's check (scripts/wheel_check.sh) runs tests without Playwright installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["CHROMIUM", "PHONE", "browser"]

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium without a microphone."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()

"""Browser fixtures: Debian's chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.conftest import skip_unless_ci

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    for path in (os.environ.get("SLUICE_CHROMIUM"), *CHROMIUM_PATHS):
        if path and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


# Module scope, not session: Playwright's sync API runs an event loop in this thread while it
# is open, and the async tests that run after this module need the thread's loop free.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        skip_unless_ci(
            "chromium is not installed (apt-get install chromium fonts-noto-cjk); "
            "the console's browser tests need it"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_unless_ci("playwright is not installed (the dev extra has it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()

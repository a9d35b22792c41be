"""Debian's Chromium driven by Playwright: never a downloaded browser."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("DEVDOCK_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium floods a closed network with connection attempts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Package scope: a live sync Playwright keeps its event loop marked as running, which would break every
# later asyncio.run() in the same session (other tiers); closing it with this tier avoids that.
@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: scripts/test.sh installs Debian's package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    yield page
    context.close()

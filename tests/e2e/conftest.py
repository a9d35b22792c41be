"""The browser tier: Debian's Chromium driven by Playwright (see tests.harness.chromium)."""

from __future__ import annotations

import pytest

from tests import harness


@pytest.fixture(scope="package")
def browser():
    with harness.chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    yield page
    context.close()

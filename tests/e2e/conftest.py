"""The browser tier: Debian's Chromium driven by Playwright (see tests.harness.chromium)."""

from __future__ import annotations

import pytest

from tests import harness


@pytest.fixture(scope="module")
def hub_defaults() -> dict:
    """The browser tier shows what people meet: each server's desktop starts with it, as shipped (the harness's
    hubs elsewhere start it when it is first opened: tests.harness.Hub)."""
    return {"desktop_prestart": True}


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

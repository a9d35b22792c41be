"""Fixtures of the fresh tier: its own Docker engine, started for the tier and stopped after it, and Chromium."""

from __future__ import annotations

import pytest

from tests import harness
from tests.fresh.fresh import Engine, loopback_only


@pytest.fixture(scope="package")
def engine():
    e = Engine()
    e.start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture(scope="package")
def browser():
    """Debian's Chromium, as the other browser tiers use it (package scope: see tests.harness.chromium)."""
    with harness.chromium() as b:
        yield b


@pytest.fixture
def context(browser):
    """A function that opens a browser profile of its own (cookies); requests that would leave this machine are
    aborted, and the test fails if there were any."""
    opened = []

    def open_context():
        ctx = browser.new_context(viewport={"width": 1440, "height": 900})
        ctx.off_site = loopback_only(ctx)
        opened.append(ctx)
        return ctx

    yield open_context
    for ctx in opened:
        ctx.close()
    assert not [url for ctx in opened for url in ctx.off_site]

"""Fixtures of the compose tier: the real compose stack, and Debian's Chromium signing in through the real IdP."""

from __future__ import annotations

import pytest

from tests import harness
from tests.compose.stack import Person, Stack

# Package scope: the stack and the browser go when this tier ends. A Playwright (sync API) browser left open
# keeps its event loop registered as running, which breaks later tiers' asyncio.run() and browsers.


@pytest.fixture(scope="package")
def stack(docker_client, tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("compose"))
    try:
        s.up()
        yield s
    finally:
        s.teardown(docker_client)


@pytest.fixture(scope="package")
def browser():
    """Debian's Chromium, as the e2e tier uses it."""
    with harness.chromium() as b:
        yield b


@pytest.fixture
def person(browser, stack):
    """A function that opens a fresh browser profile; all are closed after the test."""
    opened = []

    def open_person() -> Person:
        p = Person(browser, stack)
        opened.append(p)
        return p

    yield open_person
    for p in opened:
        p.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.when == "call" and "stack" in item.fixturenames:
        stack = item.funcargs.get("stack")
        client = item.funcargs.get("docker_client")
        if stack is not None and client is not None:
            text = stack.save_diagnostics(client, item.name)
            report.sections.append(("compose stack", text[-20000:]))
    return report

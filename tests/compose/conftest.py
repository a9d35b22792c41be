"""Fixtures of the compose tier: the real compose stack, and Debian's Chromium signing in through the real IdP."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from tests.compose.stack import Stack
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.harness import ARTIFACTS

SHOTS = ARTIFACTS / "screenshots" / "compose"


@pytest.fixture(scope="session")
def stack(docker_client, tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("compose"))
    try:
        s.up()
        yield s
    finally:
        s.teardown(docker_client)


@pytest.fixture(scope="session")
def browser():
    import os
    import shutil

    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: scripts/test.sh installs Debian's package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Person:
    """One browser profile (its own cookies), whose requests never leave this machine."""

    def __init__(self, browser, stack: Stack):
        self.stack = stack
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        #: Requests to anything but loopback: aborted (the network rule), and kept for assertions.
        self.off_site: list[str] = []
        #: Every URL the main frame navigated to.
        self.visited: list[str] = []
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()
        self.page.on("framenavigated", lambda frame: frame.parent_frame is None and self.visited.append(frame.url))

    def _guard(self, route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.off_site.append(route.request.url)
            route.abort()

    def sign_in_at_idp(self, user: str, password: str | None = None) -> None:
        """Fill the identity provider's login form this browser was sent to."""
        page = self.page
        page.wait_for_url(f"{self.stack.issuer}/interaction/**")
        page.fill("#username", user)
        page.fill("#password", self.stack.passwords[user] if password is None else password)
        page.click("#sign-in")

    def sign_in(self, user: str) -> None:
        """Open the hub, get sent to the IdP, sign in and come back to the hub."""
        self.page.goto(self.stack.url + "/hub/")
        self.sign_in_at_idp(user)
        self.page.wait_for_url(self.stack.url + "/**")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SHOTS / f"{name}.png")

    def close(self) -> None:
        self.context.close()


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

"""Firefox ESR in the desktop, in Chromium through the real hub: it starts without first-run pages or looking up any
host."""

from __future__ import annotations

import time

import pytest

from tests.e2e.desktop import SHOTS, as_user, open_desktop
from tests.harness import Hub

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hub(docker_client, tmp_path_factory):
    hub = Hub(docker_client, tmp_path_factory.mktemp("firefox"))
    hub.start()
    yield hub
    hub.stop()


def test_desktop_firefox_starts_without_first_run_pages_or_phoning_home(hub, page):
    hub.spawn("dv-fox")
    container = hub.container("dv-fox")
    # The panel's web browser launcher (XFCE's debian-sensible-browser helper) is Firefox ESR.
    browser_path = as_user(container, "readlink -f /etc/alternatives/x-www-browser").strip()
    assert browser_path.endswith("firefox-esr"), browser_path
    log = "/tmp/firefox-dns.log"
    # Every host name Firefox looks up goes to its log (MOZ_LOG's resolver module).
    as_user(container, f"(MOZ_LOG=nsHostResolver:5 MOZ_LOG_FILE={log} firefox-esr >/dev/null 2>&1 &); true")
    deadline = time.monotonic() + 90
    while "Mozilla Firefox" not in as_user(container, "xwininfo -root -tree | grep -i firefox"):
        assert time.monotonic() < deadline, as_user(container, "xwininfo -root -tree")
        time.sleep(1)
    time.sleep(15)  # what a start would fetch (first-run pages, telemetry, updates, safe browsing) starts by now
    lookups = as_user(container, f"cat {log}* 2>/dev/null | grep -o 'Resolving host \\[[^]]*\\]' | sort -u")
    assert lookups.strip() == "", lookups
    titles = as_user(container, "xwininfo -root -tree | grep -i firefox")
    assert "Welcome" not in titles and "Privacy" not in titles, titles
    open_desktop(page, hub, "dv-fox", drawn=False)
    page.wait_for_timeout(3000)
    page.screenshot(path=SHOTS / "desktop-firefox.png")
    # The control: a page the user opens is looked up (the log works).
    as_user(container, "firefox-esr --new-tab http://devdock-control.invalid/ >/dev/null 2>&1; true")
    deadline = time.monotonic() + 30
    while "devdock-control.invalid" not in as_user(container, f"cat {log}* 2>/dev/null"):
        assert time.monotonic() < deadline, "Firefox's resolver log stayed empty"
        time.sleep(1)
    hub.stop_server("dv-fox")

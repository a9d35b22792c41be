"""GPU health and use as admins and users see them, in Chromium through the real hub: a GPU that reports an XID is
flagged on the admin page with its reason, its user reads the notice on their home page, the admin clears it with
the page's own button. The GPUs are stand-ins (device nodes and an nvidia-smi script, see tests.harness.StandInGPUs);
the XID goes through the real kernel log. The screenshots are docs/gpu.md's."""

from __future__ import annotations

import time

import pytest

from tests.e2e.desktop import SHOTS, login
from tests.e2e.desktop import no_desktop_opened as hub_defaults  # noqa: F401 - this module's hubs
from tests.harness import RUN_ID, StandInGPUs, host_pid_of

UUIDS = [f"GPU-adm{RUN_ID}-0000-0000-0000-00000000000{i}" for i in range(2)]
PROFILES = [
    {"slug": "cpu", "display_name": "Desktop", "default": True},
    {"slug": "gpu-1", "display_name": "One GPU", "gpus": 1},
]


@pytest.fixture(scope="module")
def gpu_hub(make_hub, tmp_path_factory, device_nodes):
    gpus = StandInGPUs(tmp_path_factory.mktemp("stand-in-smi"), UUIDS)
    return make_hub("gpu-admin", extra_config=gpus.hub_config(device_nodes, PROFILES)), gpus


def _reload_until(page, selector: str, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in (page.locator(selector).inner_text() if page.locator(selector).count() else ""):
        assert time.monotonic() < deadline, f"{text!r} not in {selector} within {timeout} s"
        time.sleep(1)
        page.reload()


def test_gpu_health_admin_sees_the_xid_user_is_told_admin_clears_it_in_chromium(gpu_hub, page, browser):
    hub, gpus = gpu_hub
    hub.spawn("gpa-ann", options={"profile": "gpu-1"})
    hub.spawn("gpa-bob", options={"profile": "gpu-1"})
    (held,) = hub.server_state("gpa-ann")["gpu_ids"]
    index = UUIDS.index(held)
    gpus.apps([(held, host_pid_of(hub.container("gpa-ann"), "7001"), 5120)])
    gpus.gpus(util=(92, 35) if index == 0 else (35, 92), used=(6144, 2048) if index == 0 else (2048, 6144))
    login(page, hub, "admin")
    page.goto(f"{hub.url}/hub/devdock/admin")
    row = f'#devdock-gpus tr[data-uuid="{held}"]'
    _reload_until(page, f"{row} .utilization", "92 %")
    ann_row = 'tr[data-user="gpa-ann"] .gpu-use'
    _reload_until(page, ann_row, "5.0 GiB, 92 % busy")
    gpus.xid(index, 79, "GPU has fallen off the bus.")
    _reload_until(page, f"{row} .health", "XID 79: GPU has fallen off the bus.")
    other = f'#devdock-gpus tr[data-uuid="{UUIDS[1 - index]}"]'
    assert page.locator(f"{other} .health").inner_text().strip() == "healthy"  # the control: the other GPU
    page.locator("#devdock-gpus").scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "admin-gpus.png", full_page=True)

    # ann, whose server holds that GPU, reads why on her home page; bob, on the other GPU, reads nothing.
    for user, told in (("gpa-ann", True), ("gpa-bob", False)):
        context = browser.new_context(viewport={"width": 1280, "height": 640})
        other_page = context.new_page()
        login(other_page, hub, user)
        other_page.goto(f"{hub.url}/hub/home")
        notice = other_page.locator(".devdock-gpu-health")
        if told:
            assert "reported errors (XID 79: GPU has fallen off the bus.)" in notice.inner_text()
            other_page.screenshot(path=SHOTS / "gpu-health-notice.png")
        else:
            assert notice.count() == 0
        context.close()

    # The admin clears it with the button next to it; at the next reading it is healthy again.
    page.locator(f"{row} button", has_text="Clear").click()
    _reload_until(page, f"{row} .health", "healthy")
    hub.stop_server("gpa-ann")
    hub.stop_server("gpa-bob")

"""GPU quotas through the real hub, accounting database and engine (stand-in GPUs): a person's GPU-hours used up
refuse their next GPU start with a sentence and grey the GPU profiles out on the form, while a CPU server still
starts; a JupyterHub group's rule applies to its members (its GPUs-at-once cap)."""

from __future__ import annotations

import html
import re
import time

import pytest

from tests.harness import RUN_ID, devices_mode_config

UUIDS = [f"GPU-quo{RUN_ID}-0000-0000-0000-00000000000{i}" for i in range(2)]
PROFILES = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "gpu", "display_name": "1 GPU", "gpus": 1},
    {"slug": "gpu2", "display_name": "2 GPUs", "gpus": 2},
]
HOURS = 0.005  # 18 GPU-seconds a day
QUOTAS = {"default": {"gpu_hours": HOURS, "period": "day"}, "groups": {"big": {"gpu_hours": 100, "gpus_at_once": 1}}}


def _page(session, url: str) -> str:
    """A hub page as text a person reads: entities decoded, white space folded."""
    return re.sub(r"\s+", " ", html.unescape(session.get(url, timeout=30).text))


@pytest.fixture(scope="module")
def quota_hub(make_hub, device_nodes):
    extra = (
        devices_mode_config(device_nodes, UUIDS)
        + f"c.DevDockSpawner.profile_list = {PROFILES!r}\n"
        + f"c.DevDockSpawner.gpu_quotas = {QUOTAS!r}\n"
    )
    return make_hub("quota", extra_config=extra)


def test_gpu_quota_used_up_refuses_the_next_gpu_start_with_a_sentence_and_a_cpu_server_still_starts(quota_hub):
    hub = quota_hub
    session = hub.browser_session("qmax")
    form = _page(session, f"{hub.url}/hub/spawn")
    assert f"GPU-hours left this day: {HOURS:g} of {HOURS:g} (this hub's default quota)" in form
    hub.spawn("qmax", options={"profile": "gpu"})
    time.sleep(HOURS * 3600 + 2)  # the day's GPU-seconds held
    hub.stop_server("qmax")
    r = hub.api("POST", "/users/qmax/server", json={"profile": "gpu"})
    assert r.status_code == 403, r.text
    assert f"of this hub's default {HOURS:g} GPU-hours this day" in r.json()["message"], r.json()
    assert hub.container("qmax") is None
    form = _page(session, f"{hub.url}/hub/spawn")
    gpu_row = re.search(r'<input[^>]*id="profile-gpu"[^>]*>', form).group(0)
    assert "disabled" in gpu_row and "Your GPU-hours are used up." in form and "no GPU server starts until" in form
    hub.spawn("qmax", options={"profile": "desktop"})  # the control: without GPUs the start goes on
    hub.stop_server("qmax")


def test_gpu_quota_of_a_group_applies_to_its_members(quota_hub):
    hub = quota_hub
    hub.create_user("qbig")
    assert hub.api("POST", "/groups/big").status_code in (201, 409)
    assert hub.api("POST", "/groups/big/users", json={"users": ["qbig"]}).status_code == 200
    r = hub.api("POST", "/users/qbig/server", json={"profile": "gpu2"})
    assert r.status_code == 409 and "at most 1 per person" in r.json()["message"], r.text  # the group's cap
    hub.spawn("qbig", options={"profile": "gpu"})
    form = _page(hub.browser_session("qbig"), f"{hub.url}/hub/spawn/qbig/other")
    assert "(the big group's quota, at most 1 GPUs at once)" in form
    hub.stop_server("qbig")
    # Prometheus counts the GPU-seconds held by group (qmax, in no group, under "").
    assert hub.metric('devdock_gpu_seconds_held_total{group="big"}') > 0
    page = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/usage", timeout=30).text  # admins: by group
    assert re.search(r'<tr data-group="big" data-month="[0-9-]+"><td>[0-9-]+</td><td>big</td><td>1</td>', page)
    assert hub.metric('devdock_gpu_seconds_held_total{group=""}') >= HOURS * 3600


@pytest.fixture(scope="module")
def last_in_line_hub(make_hub, device_nodes):
    """One GPU; the group ``spent`` has no GPU-hours, and starts past their quota wait behind the others."""
    extra = (
        devices_mode_config(device_nodes[:1], UUIDS[:1])
        + f"c.DevDockSpawner.profile_list = {PROFILES[:2]!r}\n"
        + 'c.DevDockSpawner.gpu_quotas = {"groups": {"spent": {"gpu_hours": 0}}}\n'
        + 'c.DevDockSpawner.gpu_quota_exceeded = "wait"\n'
    )
    hub = make_hub("quota-wait", extra_config=extra)
    hub.create_user("wover")
    assert hub.api("POST", "/groups/spent").status_code in (201, 409)
    assert hub.api("POST", "/groups/spent/users", json={"users": ["wover"]}).status_code == 200
    return hub


def _admin_line(hub) -> list[str]:
    page = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/admin", timeout=30).text
    table = page.split('id="devdock-line"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr data-key="([^"]+)">', table)


def test_gpu_quota_exceeded_waits_behind_everyone_within_quota_and_starts_when_nobody_else_waits(last_in_line_hub):
    hub = last_in_line_hub
    form = _page(hub.browser_session("wover"), f"{hub.url}/hub/spawn")
    assert "Past your quota a GPU start still may wait" in form
    assert "disabled" not in re.search(r'<input[^>]*id="profile-gpu"[^>]*>', form).group(0)
    hub.spawn("whold", options={"profile": "gpu"})  # the one GPU
    # Past its quota: not refused, but in line ...
    assert hub.api("POST", "/users/wover/server", json={"profile": "gpu"}).status_code == 202
    # ... and a start within quota that comes later goes before it.
    hub.create_user("win")
    assert hub.api("POST", "/users/win/server", json={"profile": "gpu"}).status_code == 202
    deadline = time.monotonic() + 30
    while _admin_line(hub) != ["win/", "wover/"]:
        assert time.monotonic() < deadline, _admin_line(hub)
        time.sleep(1)
    hub.stop_server("whold")
    hub.wait_ready("win", timeout=120)
    assert hub.api("GET", "/users/wover").json()["servers"][""]["pending"] == "spawn"  # still waiting
    # Nobody within quota waits now: the start past its quota gets the GPU.
    hub.stop_server("win")
    hub.wait_ready("wover", timeout=120)
    hub.stop_server("wover")

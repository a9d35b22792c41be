"""The line for GPUs as users meet it, with the shipped default (``gpu_queue`` on), through the real hub, proxy and
engine, in Chromium: two stand-in GPUs, three users; the third waits in line on the spawn page and starts by
itself when a GPU is given back; the line keeps its order across a hub restart; cancelling leaves the line."""

from __future__ import annotations

import html
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests

from tests.e2e.desktop import SHOTS, login
from tests.e2e.desktop import no_desktop_opened as hub_defaults  # noqa: F401 - this module's hubs
from tests.harness import RUN_ID, devices_mode_config, xsrf_from

UUIDS = [f"GPU-que{RUN_ID}-0000-0000-0000-00000000000{i}" for i in range(2)]
PROFILES = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "gpu", "display_name": "1 GPU", "gpus": 1},
]


@pytest.fixture(scope="module")
def queue_hub(make_hub, device_nodes):
    # Nothing about the line is configured: what a site gets from devdock's jupyterhub_config.py.
    return make_hub(
        "queue",
        extra_config=devices_mode_config(device_nodes, UUIDS) + f"c.DevDockSpawner.profile_list = {PROFILES!r}\n",
    )


def _line_message(hub, user: str, wanted: str, timeout: float = 60) -> str:
    """The newest "in line" message of ``user``'s pending start that contains ``wanted`` (its progress events,
    as the spawn page reads them), waiting for it."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        server = hub.api("GET", f"/users/{user}").json()["servers"].get("", {})
        if server.get("pending") != "spawn":
            time.sleep(0.5)
            continue
        url = f"{hub.url}/hub/api/users/{user}/server/progress"
        try:
            with requests.get(url, headers={"Authorization": f"token {hub.service_token}"}, stream=True,
                              timeout=(5, 20)) as r:  # fmt: skip
                for line in r.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        message = json.loads(line[5:]).get("message", "")
                        seen.append(message)
                        if "in line" in message and wanted in message:
                            return message
        except requests.RequestException:
            pass  # the stream ends after its read timeout while the start waits: ask again
    raise AssertionError(f"{user}: no message with {wanted!r} in {timeout} s; seen: {seen[-5:]}\n{hub.log_tail(40)}")


def _pending(hub, user: str) -> bool:
    return hub.api("GET", f"/users/{user}").json()["servers"].get("", {}).get("pending") == "spawn"


def _queue(hub, *users: str) -> None:
    """Start ``users``' GPU servers through the REST API, one after the other (JupyterHub answers a start that is
    still pending after 10 s: the requests overlap), and wait until each is in line."""
    for user in users:
        hub.create_user(user)
    with ThreadPoolExecutor(len(users)) as pool:
        answers = []
        for user in users:
            answers.append(pool.submit(hub.api, "POST", f"/users/{user}/server", json={"profile": "gpu"}))
            _line_message(hub, user, "in line")  # in line before the next one asks
        for answer in answers:
            assert answer.result().status_code == 202, answer.result().text  # accepted and pending: not refused


def _admin_line(hub) -> list[tuple[str, str]]:
    """(place, owner/server) of each row of the admin page's "Waiting for GPUs"."""
    page = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/admin", timeout=30).text
    table = page.split('id="devdock-line"', 1)[1].split("</table>", 1)[0] if 'id="devdock-line"' in page else ""
    return re.findall(r'<tr data-key="([^"]+)">\s*<td class="place">(\d+)</td>', table)


def test_gpu_queue_third_user_waits_in_line_in_chromium_and_starts_by_itself_when_a_gpu_is_given_back(queue_hub, page):
    hub = queue_hub
    hub.spawn("qann", options={"profile": "gpu"})
    hub.spawn("qbob", options={"profile": "gpu"})
    (freed,) = hub.server_state("qann")["gpu_ids"]
    # The form: the GPU profile can still be chosen, and says the start will wait.
    login(page, hub, "qcat")
    page.wait_for_url("**/hub/spawn**", timeout=60_000)
    row = page.locator('[data-profile="gpu"]')
    assert row.locator("input").is_enabled()
    assert "0 of 2 free" in row.inner_text() and "waits in line" in row.inner_text()
    page.screenshot(path=SHOTS / "gpu-queue-form.png")
    page.check("#profile-gpu")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**/hub/spawn-pending/qcat**", timeout=30_000)
    message = page.locator("#progress-message")
    message.filter(has_text="1st in line").wait_for(timeout=60_000)
    # Nobody has given a GPU back yet: the estimate is the holders' time limit (3 days by default), said as a bound.
    assert "Your turn at the latest in about 72 hours" in message.inner_text()
    page.screenshot(path=SHOTS / "gpu-queue-waiting.png")
    assert hub.container("qcat") is None  # waiting holds no container
    assert hub.metric("devdock_gpus_allocated") == 2
    # ann stops: cat's start goes on by itself with ann's GPU, and her page moves on to JupyterLab.
    hub.stop_server("qann")
    page.wait_for_url("**/user/qcat/**", timeout=120_000)
    assert hub.server_state("qcat")["gpu_ids"] == [freed]
    # Her home page says until when the server may run: the GPU profile's time limit (3 days by default).
    started = datetime.fromisoformat(hub.user_model("qcat")["servers"][""]["started"])
    page.goto(f"{hub.url}/hub/home")
    end = page.locator(".devdock-end-time time").get_attribute("datetime")
    assert abs((datetime.fromisoformat(end) - started).total_seconds() - 3 * 86400) < 5, (end, started)
    assert "leaves the line for GPUs" in hub.log_tail(200)
    hub.stop_server("qcat")  # the GPU goes back (bob still holds the other)


def test_gpu_queue_keeps_its_order_across_a_hub_restart_admins_steer_it_and_stop_server_leaves_it(queue_hub, page):
    hub = queue_hub
    for user in ("qann", "qbob"):  # both GPUs held
        hub.create_user(user)
        if not hub.server_state(user).get("gpu_ids"):
            hub.spawn(user, options={"profile": "gpu"})
    _queue(hub, "qdan", "qeve", "qfay")
    restarted = datetime.now(UTC)
    hub.restart()
    # The restarted hub puts all three back, in the same order, though none asked again.
    for user, place in (("qdan", "1st"), ("qeve", "2nd"), ("qfay", "3rd")):
        assert f"{place} in line" in _line_message(hub, user, place, timeout=90)
    assert hub.server_state("qann")["gpu_ids"] and hub.server_state("qbob")["gpu_ids"]  # the holders kept theirs
    assert _admin_line(hub) == [("qdan/", "1"), ("qeve/", "2"), ("qfay/", "3")]
    # An admin puts fay first, then removes eve from the line (her start is cancelled).
    admin = hub.browser_session("admin")
    for action, key in (("line_front", "qfay/"), ("line_remove", "qeve/")):
        form = admin.get(f"{hub.url}/hub/devdock/admin", timeout=30).text
        r = admin.post(f"{hub.url}/hub/devdock/admin", data={"_xsrf": xsrf_from(form), action: key}, timeout=60)
        assert r.status_code == 200, r.text[-300:]
    assert _admin_line(hub) == [("qfay/", "1"), ("qdan/", "2")]
    assert "1st in line" in _line_message(hub, "qfay", "1st")
    assert not _pending(hub, "qeve") and hub.container("qeve") is None
    # dan's home page says where he is; he leaves the line with the spawn page's own Stop Server button.
    login(page, hub, "qdan")
    page.goto(f"{hub.url}/hub/home")
    notice = page.locator(".devdock-line")
    notice.wait_for(timeout=30_000)
    assert "waits in line for GPUs (2nd of 2)" in " ".join(notice.inner_text().split())
    page.goto(f"{hub.url}/hub/spawn-pending/qdan")
    page.locator("#progress-message").filter(has_text="in line").wait_for(timeout=30_000)
    page.click("#stop-server-btn")
    page.locator("#stop-server-status").filter(has_text="stopped").wait_for(timeout=60_000)
    assert not _pending(hub, "qdan")
    assert _admin_line(hub) == [("qfay/", "1")]
    for user in ("qdan", "qeve"):  # their places are not kept for a later restart
        assert not hub.server_state(user).get("gpu_queue_since"), hub.server_state(user)
    # A GPU given back goes to the one left in line.
    hub.stop_server("qbob")
    hub.wait_ready("qfay", timeout=120)
    assert hub.server_state("qfay")["gpu_ids"]
    for user in ("qann", "qfay"):
        hub.stop_server(user, by=user)  # each stops their own: the run ends "stopped" (an admin's stop: "admin")
    # Accounting: ann's run went on through the restart in one row; a start that only waited has none.
    runs = _runs(hub)
    ann = next(r for r in runs if r["user"] == "qann")  # the newest first
    assert datetime.fromisoformat(ann["started"]) < restarted < datetime.fromisoformat(ann["ended"]), ann
    assert ann["gpu_count"] == 1 and ann["end_reason"] == "stopped"
    assert not [r for r in runs if r["user"] in ("qdan", "qeve")]


CONTENTION, EVERY = 15, 5


@pytest.fixture(scope="module")
def contended_hub(make_hub, device_nodes):
    """One stand-in GPU; the usual idle limit of GPU servers (2 h), a short one while someone waits for it."""
    extra = devices_mode_config(device_nodes[:1], UUIDS[:1]) + f"c.DevDockSpawner.profile_list = {PROFILES!r}\n"
    return make_hub(
        "queue-cull",
        extra_config=extra,
        DEVDOCK_CULL_GPU_CONTENTION_TIMEOUT=str(CONTENTION),
        DEVDOCK_CULL_EVERY=str(EVERY),
    )


def _runs(hub, user: str = "admin") -> list[dict]:
    """The accounting rows ``user`` may see (admins: everyone's), from the usage page's JSON export."""
    r = hub.browser_session(user).get(f"{hub.url}/hub/devdock/usage?format=json", timeout=30)
    assert r.status_code == 200, r.text[-300:]
    return r.json()["runs"]


def test_gpu_queue_contention_an_idle_gpu_server_goes_sooner_while_someone_waits_and_the_wait_ends(contended_hub):
    hub = contended_hub
    hub.spawn("cidle", options={"profile": "gpu"})
    started = datetime.fromisoformat(hub.user_model("cidle")["servers"][""]["started"])
    (gpu,) = hub.server_state("cidle")["gpu_ids"]
    # Control: nobody waits, so past the shorter limit (and culler rounds) the idle server keeps its GPU.
    time.sleep(CONTENTION + 2 * EVERY + 10)
    assert "" in hub.api("GET", "/users/cidle").json()["servers"]
    # Someone waits for that GPU: the idle server is stopped, and the waiting start gets the GPU by itself.
    hub.create_user("cwait")
    r = hub.api("POST", "/users/cwait/server", json={"profile": "gpu"})
    assert r.status_code in (201, 202), r.text  # 201: the cull came within JupyterHub's 10 s answer
    hub.wait_ready("cwait", timeout=120)
    assert "cwait waits in line for GPUs" in hub.log_tail(400)  # it did wait: the GPU was cidle's
    assert hub.server_state("cwait")["gpu_ids"] == [gpu]
    assert "" not in hub.api("GET", "/users/cidle").json()["servers"]
    stop_reason = hub.server_state("cidle")["stop_reason"]
    assert "while others waited in line for its GPUs" in stop_reason["reason"], stop_reason
    assert hub.metric('devdock_gpu_line_wait_seconds_count{outcome="turn"}') >= 1
    hub.stop_server("cwait", by="cwait")
    # Accounting: one row per run, with its GPU, how long it held it and why it ended.
    runs = {r["user"]: r for r in _runs(hub)}
    idle, waited = runs["cidle"], runs["cwait"]
    assert (idle["gpus"], idle["gpu_count"], idle["end_reason"]) == (gpu, 1, "contention"), idle
    # Its run: from its start (JupyterHub's clock; the row opens when the server answers) to the cull (the culler's
    # notice, just before the stop), held with one GPU the whole time.
    culled = datetime.fromisoformat(stop_reason["at"])
    assert 0 <= (datetime.fromisoformat(idle["started"]) - started).total_seconds() < 30, (idle, started)
    assert abs((datetime.fromisoformat(idle["ended"]) - culled).total_seconds()) < 10, (idle, culled)
    assert idle["gpu_seconds_held"] == idle["seconds"] > CONTENTION
    assert (waited["gpus"], waited["end_reason"]) == (gpu, "stopped") and waited["ended"]
    assert [r["user"] for r in _runs(hub, "cidle")] == ["cidle"]  # a user sees their own runs only
    page = hub.browser_session("cidle").get(f"{hub.url}/hub/devdock/usage?format=csv", timeout=30).text
    assert page.splitlines()[0].startswith("id,user,server") and ",cidle," in page and "cwait" not in page


MAX_AGE, STEP = 45, 20


@pytest.fixture(scope="module")
def limited_hub(make_hub, device_nodes):
    """One stand-in GPU whose servers may run MAX_AGE seconds; users may add STEP seconds twice."""
    extra = (
        devices_mode_config(device_nodes[:1], UUIDS[:1])
        + f"c.DevDockSpawner.profile_list = {PROFILES!r}\n"
        + f"c.DevDockSpawner.cull_max_age_extension = {STEP}\n"
        + f"c.DevDockSpawner.cull_max_age_extension_cap = {2 * STEP}\n"
    )
    return make_hub("queue-limit", extra_config=extra, DEVDOCK_CULL_GPU_MAX_AGE=str(MAX_AGE), DEVDOCK_CULL_EVERY="5")


def _end_time(session, hub) -> datetime:
    page = session.get(f"{hub.url}/hub/home", timeout=30).text
    return datetime.fromisoformat(re.search(r'class="devdock-end-time".*?<time datetime="([^"]+)"', page, re.S)[1])


def test_gpu_queue_time_limit_extended_while_nobody_waits_refused_while_someone_does_and_the_server_sees_it(
    limited_hub,
):
    hub = limited_hub
    hub.spawn("xana", options={"profile": "gpu"})
    started = datetime.fromisoformat(hub.user_model("xana")["servers"][""]["started"])
    session = hub.browser_session("xana")
    assert abs((_end_time(session, hub) - started).total_seconds() - MAX_AGE) < 2
    page = session.get(f"{hub.url}/hub/home", timeout=30).text
    r = session.post(f"{hub.url}/hub/devdock/extend/", data={"_xsrf": xsrf_from(page)}, timeout=30)
    assert r.status_code == 200, r.text[-300:]  # back on the home page
    assert abs((_end_time(session, hub) - started).total_seconds() - (MAX_AGE + STEP)) < 2
    # The server's own warnings count with the new limit (devdock_ext reads it from the hub's root-owned file).
    token = hub.token("xana")
    status = requests.get(hub.server_url("xana") + "api/devdock/status", headers={"Authorization": f"token {token}"},
                          timeout=30).json()  # fmt: skip
    assert abs((datetime.fromisoformat(status["stops_at"]) - started).total_seconds() - (MAX_AGE + STEP)) < 1, status
    # Someone waits for that GPU: no more time for xana.
    hub.create_user("xbob")
    assert hub.api("POST", "/users/xbob/server", json={"profile": "gpu"}).status_code == 202
    page = session.get(f"{hub.url}/hub/home", timeout=30).text
    assert "Others wait in line for this kind of GPU" in html.unescape(page)
    r = session.post(f"{hub.url}/hub/devdock/extend/", data={"_xsrf": xsrf_from(page)}, timeout=30)
    assert r.status_code == 409 and "Others wait in line" in html.unescape(r.text)
    # The culler keeps xana past the profile's limit, to the extended one, then bob gets the GPU.
    while (datetime.now(UTC) - started).total_seconds() < MAX_AGE + 5:
        time.sleep(1)
    assert "" in hub.api("GET", "/users/xana").json()["servers"]  # past 45 s: extended, still running
    hub.wait_ready("xbob", timeout=MAX_AGE + STEP + 60)
    assert (datetime.now(UTC) - started).total_seconds() >= MAX_AGE + STEP - 2
    assert "extended by 20 s" in hub.server_state("xana")["stop_reason"]["reason"]
    hub.stop_server("xbob")

"""GPU reservations as an instructor, their students and everyone else meet them, through the real hub, proxy,
culler and engine, in Chromium: two stand-in GPUs; an instructor books one for the group ``ml-course`` on the
bookings page (times in Europe/Berlin); the server that would hold it at the start is told its new end (home page
and the server's own warning) and is stopped by the culler then, while an older one runs on; a student waiting in
line gets the booked GPU at the start; during the window an outsider's start waits while a member's passes it; at
the window's end the outsider gets the GPU; the accounting says why the cut server ended. Booking rules, approval
and cancelling go through the same page."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.e2e.desktop import SHOTS, login
from tests.e2e.desktop import no_desktop_opened as hub_defaults  # noqa: F401 - this module's hubs
from tests.harness import RUN_ID, devices_mode_config, xsrf_from

UUIDS = [f"GPU-res{RUN_ID}-0000-0000-0000-00000000000{i}" for i in range(2)]
PROFILES = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "gpu", "display_name": "1 GPU", "gpus": 1},
]
RULES = {
    "groups": {"instructors": {"gpus": 2, "hours": 2}, "phd": {"gpus": 1, "hours": 1, "approval": True}},
}
BERLIN = ZoneInfo("Europe/Berlin")
#: Seconds from the booking to its window's start, and the window's length.
LEAD, WINDOW = 60, 80
#: The servers' warning time: a booking starts at least this far ahead, and cut servers are warned this long.
WARNING = 40


@pytest.fixture(scope="module")
def booking_hub(make_hub, device_nodes):
    extra = (
        devices_mode_config(device_nodes, UUIDS)
        + f"c.DevDockSpawner.profile_list = {PROFILES!r}\n"
        + f"c.DevDockSpawner.gpu_reservation_rules = {RULES!r}\n"
        + 'c.DevDockSpawner.gpu_reservation_timezone = "Europe/Berlin"\n'
    )
    hub = make_hub("reserve", extra_config=extra, DEVDOCK_CULL_EVERY="5", DEVDOCK_CULL_WARNING=str(WARNING))
    for group, members in {"instructors": ["rteach"], "ml-course": ["rteach", "rcat"], "phd": ["rphd"]}.items():
        for user in members:
            hub.create_user(user)
        assert hub.api("POST", f"/groups/{group}").status_code in (201, 409)
        assert hub.api("POST", f"/groups/{group}/users", json={"users": members}).status_code == 200
    return hub


def _berlin(when: datetime) -> str:
    return when.astimezone(BERLIN).strftime("%Y-%m-%dT%H:%M:%S")


def _status(hub, user: str) -> dict:
    return requests.get(hub.server_url(user) + "api/devdock/status", timeout=30,
                        headers={"Authorization": f"token {hub.token(user)}"}).json()  # fmt: skip


def _pending(hub, user: str) -> bool:
    return hub.api("GET", f"/users/{user}").json()["servers"].get("", {}).get("pending") == "spawn"


def _wait_until(when: datetime) -> None:
    while datetime.now(UTC) < when:
        time.sleep(0.5)


def test_gpu_reservation_keeps_a_booked_gpu_for_the_group_cuts_the_newest_outsider_and_hands_it_over(booking_hub, page):
    hub = booking_hub
    hub.spawn("rann", options={"profile": "gpu"})  # the older outsider: runs on
    hub.spawn("rbob", options={"profile": "gpu"})  # the newer: its GPU is the booked one at the start
    (bobs_gpu,) = hub.server_state("rbob")["gpu_ids"]
    # The instructor books one GPU for the course in Chromium, in Berlin time.
    start = (datetime.now(UTC) + timedelta(seconds=LEAD)).replace(microsecond=0)
    end = start + timedelta(seconds=WINDOW)
    login(page, hub, "rteach")
    page.wait_for_url("**/hub/**", timeout=60_000)
    page.goto(f"{hub.url}/hub/devdock/reservations")
    assert "This hub has 2 whole GPUs" in page.inner_text("body")
    page.fill("#book-count", "1")
    page.fill("#book-start", _berlin(start))
    page.fill("#book-end", _berlin(end))
    page.select_option("#book-group", "ml-course")
    page.fill("#book-note", "Lab 3: fine-tuning")
    page.click("#book-submit")
    page.locator("#devdock-booking-done").wait_for(timeout=30_000)
    row = page.locator("tr.devdock-booking").first
    assert "the group ml-course" in row.inner_text() and "approved" in row.inner_text()
    assert f"{start.astimezone(BERLIN):%H:%M}–{end.astimezone(BERLIN):%H:%M}" in row.inner_text()  # Berlin's clock
    page.screenshot(path=SHOTS / "gpu-reservations-week.png")
    # bob's server is told its new end: the home page, and the server's own warning (the hub writes it in).
    bob = hub.browser_session("rbob")
    home = html.unescape(bob.get(f"{hub.url}/hub/home", timeout=30).text)
    shown = re.search(r'class="devdock-end-time".*?<time datetime="([^"]+)"', home, re.S)[1]
    assert datetime.fromisoformat(shown) == start and "booked for the group ml-course" in home, home[-2000:]
    r = bob.post(f"{hub.url}/hub/devdock/extend/", data={"_xsrf": xsrf_from(home)}, timeout=30)
    assert r.status_code == 409 and "booked for the group ml-course" in html.unescape(r.text)
    deadline = time.monotonic() + 30
    while abs((datetime.fromisoformat(_status(hub, "rbob")["stops_at"]) - start).total_seconds()) > 0.01:
        assert time.monotonic() < deadline, _status(hub, "rbob")
        time.sleep(1)
    # The desktop panel's "until ..." says the same, and why (the hub wrote both into the server).
    panel = hub.container("rbob").exec_run(["/opt/devdock/bin/devdock-end-time"]).output.decode()
    assert f"until {start:%a %H:%M}" in panel and "booked for the group ml-course" in panel, panel
    # Control: ann's server (older) keeps its own time limit.
    ann = html.unescape(hub.browser_session("rann").get(f"{hub.url}/hub/home", timeout=30).text)
    assert "booked for" not in ann and datetime.fromisoformat(_status(hub, "rann")["stops_at"]) > end
    # A student of the course asks for a GPU before the window: both are taken, so the start waits in line.
    assert hub.api("POST", "/users/rcat/server", json={"profile": "gpu"}).status_code == 202
    # Within the warning time before the start, bob is warned, with the booking named.
    while not (warning := _status(hub, "rbob")["warning"]):
        assert datetime.now(UTC) < start - timedelta(seconds=WARNING - 15), "no warning in the warning time"
        time.sleep(1)
    assert "stopped in" in warning and "booked for the group ml-course" in warning, warning
    assert datetime.now(UTC) < start, "the checks before the window took too long for this test's timing"
    # At the start: the culler stops bob's server for the booking, and the student gets its GPU by itself.
    hub.wait_ready("rcat", timeout=LEAD + 60)
    assert datetime.now(UTC) >= start
    assert hub.server_state("rcat")["gpu_ids"] == [bobs_gpu]
    assert "" not in hub.api("GET", "/users/rbob").json()["servers"]
    assert "GPU reservation for the group ml-course" in hub.server_state("rbob")["stop_reason"]["reason"]
    assert "" in hub.api("GET", "/users/rann").json()["servers"]  # control: not cut
    # During the window: the student stops; an outsider's start must leave the booked GPU free, so it waits ...
    hub.stop_server("rcat")
    hub.create_user("rdan")
    assert hub.api("POST", "/users/rdan/server", json={"profile": "gpu"}).status_code == 202
    assert _pending(hub, "rdan")
    # ... while the course's instructor starts at once on it, passing the outsider in line.
    hub.spawn("rteach", options={"profile": "gpu"}, timeout=60)
    assert hub.server_state("rteach")["gpu_ids"] == [bobs_gpu]
    hub.stop_server("rteach")
    time.sleep(3)
    assert _pending(hub, "rdan") and datetime.now(UTC) < end, "the window ended before the checks in it"
    # After the window the GPU is anyone's: the outsider's start goes on by itself.
    hub.wait_ready("rdan", timeout=WINDOW + 60)
    assert datetime.now(UTC) >= end
    hub.stop_server("rdan")
    hub.stop_server("rann")
    # The accounting says why bob's run ended.
    runs = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/usage?format=json", timeout=30).json()["runs"]
    (bobs,) = [r for r in runs if r["user"] == "rbob"]
    assert (
        bobs["end_reason"] == "reservation"
        and abs((datetime.fromisoformat(bobs["ended"]) - start).total_seconds()) < 20
    ), bobs


def test_gpu_reservation_rules_who_may_book_approval_by_an_admin_and_cancelling(booking_hub):
    hub = booking_hub
    tomorrow = datetime.now(UTC) + timedelta(days=1)

    def book(session, **fields):
        page = session.get(f"{hub.url}/hub/devdock/reservations", timeout=30).text
        data = {"_xsrf": xsrf_from(page), "action": "book", "kind": "gpu", "count": "1", "group": "", "note": "",
                "start": _berlin(tomorrow), "end": _berlin(tomorrow + timedelta(minutes=30)), **fields}  # fmt: skip
        return session.post(f"{hub.url}/hub/devdock/reservations", data=data, timeout=30)

    # Too soon: the servers it would stop could not be warned first (the warning time is WARNING s here).
    r = book(hub.browser_session("rteach"), start=_berlin(datetime.now(UTC) + timedelta(seconds=10)))
    assert r.status_code == 400 and "must start at least 1 minute from now" in html.unescape(r.text)
    # Nobody without a rule books; the page and the refusal say so.
    hub.create_user("rnone")
    nobody = hub.browser_session("rnone")
    assert "You may not book GPUs" in nobody.get(f"{hub.url}/hub/devdock/reservations", timeout=30).text
    r = book(nobody)
    assert r.status_code == 400 and "You may not book GPUs" in html.unescape(r.text)
    # The phd rule: one GPU, an hour, approved by an admin.
    phd = hub.browser_session("rphd")
    r = book(phd, count="2", note="my thesis")
    assert r.status_code == 400 and "At most 1 GPUs" in html.unescape(r.text)
    assert 'value="my thesis"' in r.text  # bad input loses nothing: the form comes back filled in
    r = book(phd, end=_berlin(tomorrow + timedelta(hours=2)))
    assert r.status_code == 400 and "at most 1 hours" in html.unescape(r.text)
    r = book(phd, group="ml-course")
    assert r.status_code == 400 and "a group you belong to" in html.unescape(r.text)
    r = book(phd, note="thesis run")
    assert r.status_code == 200 and "Booked" in r.text
    booking_id = int(re.search(r"booked=(\d+)", r.url)[1])
    week = f"{tomorrow.astimezone(BERLIN):%Y-%m-%d}"

    def status_of(session) -> str:
        rows = session.get(f"{hub.url}/hub/devdock/reservations?week={week}&format=json", timeout=30).json()
        return {b["id"]: b["status"] for b in rows["bookings"]}.get(booking_id, "gone")

    assert status_of(phd) == "pending"
    # Only an admin approves: the booker cannot, the admin can.
    page = phd.get(f"{hub.url}/hub/devdock/reservations?week={week}", timeout=30).text
    r = phd.post(f"{hub.url}/hub/devdock/reservations", timeout=30,
                 data={"_xsrf": xsrf_from(page), "action": "approve", "id": str(booking_id)})  # fmt: skip
    assert r.status_code == 403 and status_of(phd) == "pending"
    admin = hub.browser_session("admin")
    page = admin.get(f"{hub.url}/hub/devdock/reservations?week={week}", timeout=30).text
    assert f'data-id="{booking_id}" data-status="pending"' in page and "Approve" in page
    r = admin.post(f"{hub.url}/hub/devdock/reservations", timeout=30,
                   data={"_xsrf": xsrf_from(page), "action": "approve", "id": str(booking_id)})  # fmt: skip
    assert r.status_code == 200 and status_of(phd) == "approved"
    # Someone else cannot cancel it; its booker can.
    page = nobody.get(f"{hub.url}/hub/devdock/reservations?week={week}", timeout=30).text
    r = nobody.post(f"{hub.url}/hub/devdock/reservations", timeout=30,
                    data={"_xsrf": xsrf_from(page), "action": "cancel", "id": str(booking_id)})  # fmt: skip
    assert r.status_code == 403 and status_of(phd) == "approved"
    page = phd.get(f"{hub.url}/hub/devdock/reservations?week={week}", timeout=30).text
    r = phd.post(f"{hub.url}/hub/devdock/reservations", timeout=30,
                 data={"_xsrf": xsrf_from(page), "action": "cancel", "id": str(booking_id)})  # fmt: skip
    assert r.status_code == 200 and status_of(phd) == "gone"
    # Anonymous: the page asks for a login.
    r = requests.get(f"{hub.url}/hub/devdock/reservations?format=json", timeout=30, allow_redirects=False)
    assert r.status_code in (302, 403) and "bookings" not in r.text


def test_gpu_reservation_cancelled_gives_the_cut_server_its_own_time_limit_back(booking_hub):
    hub = booking_hub
    hub.spawn("rx1", options={"profile": "gpu"})
    hub.spawn("rx2", options={"profile": "gpu"})  # the newer: a booking of one GPU cuts it
    admin = hub.browser_session("admin")
    page = admin.get(f"{hub.url}/hub/devdock/reservations", timeout=30).text
    start = datetime.now(UTC) + timedelta(minutes=15)
    r = admin.post(f"{hub.url}/hub/devdock/reservations", timeout=30, data={
        "_xsrf": xsrf_from(page), "action": "book", "kind": "gpu", "count": "1", "group": "ml-course", "note": "",
        "start": _berlin(start), "end": _berlin(start + timedelta(hours=1)),
    })  # fmt: skip
    assert r.status_code == 200, html.unescape(r.text)[-500:]
    booking_id = re.search(r"booked=(\d+)", r.url)[1]
    container = hub.container("rx2")

    def told() -> str:
        return container.exec_run(["/opt/devdock/bin/devdock-end-time"]).output.decode()

    deadline = time.monotonic() + 30
    while "booked for the group ml-course" not in told():
        assert time.monotonic() < deadline, told()
        time.sleep(1)
    assert "booked for" not in hub.container("rx1").exec_run(["/opt/devdock/bin/devdock-end-time"]).output.decode()
    # Cancelled: the server is told its own limit again (the GPU profile's 3 days), and its files say so.
    page = admin.get(r.url, timeout=30).text
    r = admin.post(f"{hub.url}/hub/devdock/reservations", timeout=30,
                   data={"_xsrf": xsrf_from(page), "action": "cancel", "id": booking_id})  # fmt: skip
    assert r.status_code == 200
    deadline = time.monotonic() + 30
    while "booked for" in told():
        assert time.monotonic() < deadline, told()
        time.sleep(1)
    started = datetime.fromisoformat(hub.user_model("rx2")["servers"][""]["started"])
    assert f"until {started + timedelta(days=3):%a %H:%M}" in told() and "(its time limit)" in told(), told()
    assert container.exec_run(["test", "-e", "/run/devdock/cull-why"]).exit_code == 1
    for user in ("rx1", "rx2"):
        hub.stop_server(user)

"""Idle culling as people meet it, in Chromium through the real hub, proxy and idle culler (short timeouts set by
configuration): an open desktop nobody touches gives its GPU back, real input keeps it, an SSH session keeps it,
the user is warned on the desktop and in JupyterLab first, and the GPU profile's shorter limit goes first."""

from __future__ import annotations

import io
import re
import subprocess
import time
from datetime import datetime, timedelta

import pytest
import requests
from PIL import Image, ImageChops

from tests.e2e.desktop import SHOTS, login, wait_for_desktop_frame
from tests.harness import devices_mode_config, keygen

UUIDS = ["GPU-cccccccc-0000-0000-0000-000000000001"]
GPU_TIMEOUT, CPU_TIMEOUT, QUICK_TIMEOUT, WARNING, EVERY = 60, 240, 25, 40, 5
PROFILES = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "gpu", "display_name": "1 GPU", "gpus": 1},
    {"slug": "quick", "display_name": "Quick", "idle_timeout": QUICK_TIMEOUT},
]
#: When a server the culler should stop is gone at the latest: its limit, a report interval, a culler round, and
#: the time a stop takes, with room for a loaded CI machine.
SLACK = 4 + EVERY + 30


@pytest.fixture(scope="module")
def cull_hub(make_hub, device_nodes):
    extra = devices_mode_config(device_nodes[:1], UUIDS) + f"c.DevDockSpawner.profile_list = {PROFILES!r}\n"
    return make_hub(
        "cull",
        extra_config=extra,
        DEVDOCK_CULL_TIMEOUT=str(CPU_TIMEOUT),
        DEVDOCK_CULL_GPU_TIMEOUT=str(GPU_TIMEOUT),
        DEVDOCK_CULL_WARNING=str(WARNING),
        DEVDOCK_CULL_EVERY=str(EVERY),
    )


def _running(hub, user: str, server: str = "") -> bool:
    return server in hub.api("GET", f"/users/{user}").json()["servers"]


def _wait_gone(hub, user: str, within: float) -> float:
    """Seconds until the server is gone (fails after ``within``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if not _running(hub, user):
            return time.monotonic() - t0
        time.sleep(1)
    raise AssertionError(f"{user}'s server still runs {within:.0f}s later:\n{hub.log_tail(60)}")


def _open_desktop(page, hub, user: str):
    login(page, hub, user)
    page.wait_for_url(f"**/user/{user}/**", timeout=180_000)
    page.goto(f"{hub.url}/user/{user}/desktop/")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    canvas = page.locator("#screen canvas")
    wait_for_desktop_frame(canvas)
    return canvas


def test_cull_an_untouched_open_desktop_gives_its_gpu_back_and_keeps_the_home(cull_hub, page):
    hub = cull_hub
    hub.spawn("dora", options={"profile": "gpu"})
    assert hub.server_state("dora")["gpu_ids"] == UUIDS
    hub.container("dora").exec_run(["sh", "-c", "echo kept > ~/results.txt"], user="1000")
    _open_desktop(page, hub, "dora")
    opened = time.monotonic()
    # The tab stays open, drawing frames, and nobody touches it: the GPU profile's limit applies.
    _wait_gone(hub, "dora", GPU_TIMEOUT + SLACK)
    waited = time.monotonic() - opened
    assert waited >= GPU_TIMEOUT - 10, f"culled after {waited:.0f}s, before its {GPU_TIMEOUT}s limit"
    assert "Culling server dora" in hub.log_tail(400)
    # The GPU is free for the next user at once, and the home is intact.
    hub.spawn("ezra", options={"profile": "gpu"})
    assert hub.server_state("ezra")["gpu_ids"] == UUIDS
    hub.stop_server("ezra")
    hub.spawn("dora")
    out = hub.container("dora").exec_run(["cat", "/home/dora/results.txt"], user="1000").output.decode().strip()
    assert out == "kept"
    hub.stop_server("dora")


def test_cull_home_page_says_why_the_server_stopped_and_when(cull_hub, page):
    """(After the cull above, dora started again and stopped herself: the notice goes with her next start.)"""
    hub = cull_hub
    hub.spawn("hope", options={"profile": "quick"})
    _wait_gone(hub, "hope", QUICK_TIMEOUT + SLACK)
    login(page, hub, "hope")
    page.goto(f"{hub.url}/hub/home")
    notice = page.locator(".devdock-stop-reason")
    notice.wait_for(timeout=30_000)
    text = notice.inner_text()
    assert "stopped by the idle culler" in text and "idle for" in text, text
    page.screenshot(path=SHOTS / "cull-home-notice.png")
    assert hub.metric('devdock_culls_total{kind="cpu"}') >= 1


def test_cull_desktop_input_keeps_the_server_and_its_end_lets_the_cull_happen(cull_hub, page):
    hub = cull_hub
    hub.spawn("ines", options={"profile": "quick"})
    canvas = _open_desktop(page, hub, "ines")
    box = canvas.bounding_box()
    t0 = time.monotonic()
    step = 0
    while time.monotonic() - t0 < QUICK_TIMEOUT + SLACK:  # well past the limit, with input every 5 s
        step += 1
        page.mouse.move(box["x"] + 100 + 37 * (step % 7), box["y"] + 100 + 23 * (step % 5))
        if step % 3 == 0:
            page.keyboard.press("Shift")
        assert _running(hub, "ines"), f"culled after {time.monotonic() - t0:.0f}s although the desktop was in use"
        time.sleep(5)
    status = hub.user_model("ines")["servers"][""]
    assert status["last_activity"]
    # Positive control: with the input over, the same server is culled.
    _wait_gone(hub, "ines", QUICK_TIMEOUT + SLACK)


def test_cull_an_ssh_session_keeps_the_server_and_its_end_lets_the_cull_happen(cull_hub, tmp_path):
    hub = cull_hub
    key, line = keygen(tmp_path, "sven")
    hub.save_ssh_keys("sven", line)
    hub.spawn("sven", options={"profile": "quick"})
    port = hub.server_state("sven")["ssh_port"]
    hold = QUICK_TIMEOUT + SLACK
    session = subprocess.Popen(
        ["ssh", "-p", str(port), "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "sven@127.0.0.1",
         f"echo open; sleep {hold}; echo done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert session.stdout.readline().strip() == "open", session.stderr.read()
        t0 = time.monotonic()
        while time.monotonic() - t0 < hold - 5:
            assert _running(hub, "sven"), f"culled after {time.monotonic() - t0:.0f}s during an SSH session"
            time.sleep(2)
        out, err = session.communicate(timeout=60)
        assert session.returncode == 0 and out.strip() == "done", (session.returncode, out, err)
    finally:
        session.kill()
    _wait_gone(hub, "sven", QUICK_TIMEOUT + SLACK)


def _region(png: bytes) -> Image.Image:
    """The top right of the desktop, where XFCE shows notifications."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return image.crop((image.width * 2 // 3, 0, image.width, image.height // 3))


@pytest.fixture
def stopped_after(cull_hub):
    """Servers a test starts are stopped after it, whatever happened (the one stand-in GPU is shared)."""
    users = []
    yield users.append
    for user in users:
        if _running(cull_hub, user):
            cull_hub.stop_server(user)


def test_cull_warning_shows_on_the_desktop_and_input_takes_it_away(cull_hub, page, stopped_after):
    hub = cull_hub
    stopped_after("wes")
    hub.spawn("wes", options={"profile": "gpu"})
    canvas = _open_desktop(page, hub, "wes")
    before = _region(canvas.screenshot())
    # The desktop's panel runs devdock's "until ..." item, which says the GPU profile's end (3 days from the start).
    container = hub.container("wes")
    assert container.exec_run(["pgrep", "-f", "libgenmon.so 23 "]).exit_code == 0, container.exec_run(["ps", "ax"])
    # Drawn, not just running: the panel's plugin windows are icons (26 px) or empty (1 px); the text is wider.
    tree = container.exec_run(["runuser", "-u", "wes", "--", "env", "DISPLAY=:1", "xwininfo", "-root", "-tree"])
    widths = [int(w) for w in re.findall(r'"Wrapper-2\.0"\)\s+(\d+)x\d+\+0\+0', tree.output.decode())]
    assert widths and max(widths) >= 60, tree.output.decode()
    shown = container.exec_run(["/opt/devdock/bin/devdock-end-time"]).output.decode()
    started = datetime.fromisoformat(hub.user_model("wes")["servers"][""]["started"])
    assert f"<txt> until {started + timedelta(days=3):%a %H:%M} </txt>" in shown, shown
    # Idle: within WARNING seconds of the GPU limit the desktop shows the notice.
    deadline = time.monotonic() + GPU_TIMEOUT
    while time.monotonic() < deadline and "idle warning shown on desktop" not in hub.container("wes").logs().decode():
        time.sleep(1)
    assert "idle warning shown on desktop" in hub.container("wes").logs().decode()
    time.sleep(2)
    shot = canvas.screenshot()
    (SHOTS / "cull-warning-desktop.png").write_bytes(shot)
    assert ImageChops.difference(before, _region(shot)).getbbox() is not None  # something appeared there
    # Input cancels it: the notice goes and the server stays.
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 300)
    page.mouse.move(box["x"] + 320, box["y"] + 340)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "idle warning withdrawn" not in hub.container("wes").logs().decode():
        page.mouse.move(box["x"] + 300 + int(time.monotonic()) % 50, box["y"] + 300)
        time.sleep(1)
    assert "idle warning withdrawn" in hub.container("wes").logs().decode()
    assert _running(hub, "wes")


def test_cull_warning_shows_in_jupyterlab_and_use_takes_it_away(cull_hub, browser, stopped_after):
    hub = cull_hub
    stopped_after("lara")
    hub.spawn("lara", options={"profile": "gpu"})
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    # The tab is in the background, as a forgotten one is: JupyterLab's own polls stand by, ours goes on.
    context.add_init_script(
        "Object.defineProperty(document, 'visibilityState', {get: () => 'hidden'});"
        "Object.defineProperty(document, 'hidden', {get: () => true});"
    )
    page = context.new_page()
    try:
        login(page, hub, "lara")
        page.wait_for_url("**/user/lara/lab**", timeout=180_000)
        notice = page.locator(".jp-Notification-Toast-warning", has_text="will be stopped")
        notice.wait_for(timeout=(GPU_TIMEOUT + 20) * 1000)
        # All the time, the top bar says until when the server may run: the GPU profile's time limit (3 days).
        end = page.locator("#devdock-end-time")
        assert end.is_visible() and end.inner_text().startswith("Server until ")
        started = datetime.fromisoformat(hub.user_model("lara")["servers"][""]["started"])
        ends_at = datetime.fromisoformat(end.get_attribute("data-ends-at"))
        assert abs((ends_at - started).total_seconds() - 3 * 86400) < 1, (ends_at, started)
        assert "(its time limit)" in end.get_attribute("title")
        page.screenshot(path=SHOTS / "cull-warning-lab.png")
        assert _running(hub, "lara")
        # Using the server (a terminal, here through its API as the user) takes the notice away.
        token = hub.token("lara")
        r = requests.post(hub.server_url("lara") + "api/terminals", headers={"Authorization": f"token {token}"})
        assert r.status_code == 200
        notice.wait_for(state="detached", timeout=40_000)
        assert _running(hub, "lara")
    finally:
        context.close()


def test_cull_the_gpu_server_goes_first_while_a_cpu_server_of_the_same_age_stays(cull_hub, stopped_after):
    hub = cull_hub
    stopped_after("gail")
    stopped_after("carl")
    hub.spawn("gail", options={"profile": "gpu"})
    hub.spawn("carl", options={"profile": "desktop"})
    _wait_gone(hub, "gail", GPU_TIMEOUT + SLACK)
    assert _running(hub, "carl")  # same age, idle as long, but its limit is the CPU one
    page = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/admin", timeout=30).text
    assert 'data-user="carl"' in page and "min (" in page.split('data-user="carl"', 1)[1].split("</tr>", 1)[0]

"""``scripts/up.sh`` as the README has it, from a clean clone, on an engine holding only what it built; then a
newcomer's journey in Debian's Chromium with the shipped defaults (size-limited homes, the SSH gateway, the culler).

alice logs in with the password up.sh printed and starts her server (the default profile) -> JupyterLab -> the
desktop drawn in noVNC -> Selkies streams it -> /hub/ssh: she adds a key and runs the real ``ssh`` with exactly the
``~/.ssh/config`` block the page shows -> ``admin`` sees her on /hub/admin and /hub/devdock/admin and stops her
server. What the README says of the defaults (idle culling on, the limits, 50 GiB homes) is read from that running
hub and its container. Screenshots: artifacts/screenshots/fresh/.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.desktop import desktop_drawn, frame_stats, wait_for_desktop_frame
from tests.fresh.fresh import HOME_IMAGES, LOGS, UpSh, cleanup_dir, clone, shot, timings, until_lab
from tests.harness import keygen, ssh_client_config

pytestmark = pytest.mark.timeout(3600)

GiB = 1024**3
#: What scripts/up.sh builds, and the base image scripts/base-image.sh makes for it: nothing else is on the engine.
UP_IMAGES = {"debian:bookworm-slim", "devdock/desktop:latest", "devdock/ssh-gateway:latest", "devdock/hub:latest"}


@pytest.fixture(scope="module")
def up(engine, tmp_path_factory):
    engine.clear()  # every image tag but the base: what the spawn needs, up.sh must build
    checkout = tmp_path_factory.mktemp("fresh-up") / "devdock"
    clone(checkout)
    hub = UpSh(checkout, engine)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()
        engine.clear(images=False)
        cleanup_dir(checkout)


def log_in(page, up: UpSh, user: str, path: str = "/") -> str:
    """``path`` of the hub's URL as up.sh printed it, its login form, the password up.sh printed; returns the hub's
    origin as the browser found it (where the login form is, after the hub's redirects), where its other pages are."""
    page.goto(up.url + path)
    page.wait_for_selector("input#username_input", timeout=30_000)
    hub = "{0.scheme}://{0.netloc}".format(urlsplit(page.url))
    page.fill("input#username_input", user)
    page.fill("input#password_input", up.password)
    page.click("#login_submit")
    return hub


def open_link(context, page, selector: str):
    """Click a link that opens a new tab (the home page's desktop links), the new tab."""
    with context.expect_page() as opened:
        page.locator(selector).first.click()
    new = opened.value
    new.wait_for_load_state()
    return new


def test_up_sh_from_a_clean_clone_then_first_spawn_desktop_selkies_ssh_admin(up, engine, context, tmp_path):
    assert up.password == (up.checkout / ".devdock" / "password").read_text().strip()

    # 1. alice logs in and starts her server with the default profile: JupyterLab.
    alice = context()
    page = alice.new_page()
    t0 = time.monotonic()
    hub = log_in(page, up, "alice")
    until_lab(page, "alice", up.log_tail)
    timings("first spawn, login to JupyterLab's launcher", time.monotonic() - t0)
    assert page.locator(".jp-LauncherCard", has_text="Desktop").count() >= 1
    shot(page, "up-lab")
    # The engine holds what up.sh built, and that is what the defaults used.
    assert engine.tags() == UP_IMAGES, engine.tags()

    # 2. The README's defaults, read from the running hub's container: limits and the 50 GiB home.
    container = engine.user_container("alice")
    assert container is not None and container.status == "running"
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 8 * GiB and host["MemorySwap"] == host["Memory"], host  # 8 GiB, no swap beyond it
    cpus = max(1.0, round(os.cpu_count() * 0.75, 2))  # three quarters of the host's CPUs
    assert (host["CpuQuota"], host["CpuPeriod"]) == (int(cpus * 100_000), 100_000), host
    assert host["PidsLimit"] == 4096 and host["ShmSize"] == 512 * 1024**2, host
    assert "size=2g" in host["Tmpfs"]["/tmp"] and "size=2g" in host["Tmpfs"]["/var/tmp"], host["Tmpfs"]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}, host["LogConfig"]
    home = next(m for m in container.attrs["Mounts"] if m["Destination"] == "/home/alice")
    volume = engine.client.volumes.get(home["Name"])
    assert volume.attrs["Options"]["type"] == "ext4", volume.attrs  # a size-limited home, the shipped default
    size = int(container.exec_run(["df", "-B1", "--output=size", "/home/alice"]).output.decode().split()[-1])
    assert 48 * GiB < size <= 50 * GiB, size
    assert (HOME_IMAGES / f"{home['Name']}.img").is_file()

    # 3. The desktop, from the hub's home page: noVNC connects and draws XFCE (not a black screen).
    page.goto(f"{hub}/hub/home")
    shot(page, "up-home")
    desktop = open_link(alice, page, "a.devdock-desktop-link[href*='/desktop/']")
    desktop.wait_for_function(
        "document.getElementById('status') && document.getElementById('status').textContent === 'Connected'",
        timeout=90_000,
    )
    png = wait_for_desktop_frame(desktop.locator("#screen canvas"))
    assert desktop_drawn(png), frame_stats(png)
    assert re.match(r"http://alice\.localhost:\d+/user/alice/desktop/", desktop.url) or "/user/alice/desktop/" in (
        desktop.url
    )
    shot(desktop, "up-desktop")
    desktop.close()

    # 4. Selkies, the other link: its stream starts and shows the drawn desktop.
    selkies = open_link(alice, page, "a.devdock-desktop-link[href*='/selkies/']")
    try:
        selkies.wait_for_function(
            "(() => { const v = document.getElementById('videoStream'); return v && v.videoWidth > 0; })()",
            timeout=90_000,
        )
    except PlaywrightTimeout:
        log = container.exec_run(["tail", "-n", "40", "/home/alice/.cache/devdock/selkies.log"], user="1000")
        raise AssertionError(f"Selkies' stream did not start; its log:\n{log.output.decode()}") from None
    deadline = time.monotonic() + 60
    while not desktop_drawn(frame := selkies.locator("#videoStream").screenshot()):
        assert time.monotonic() < deadline, frame_stats(frame)
        time.sleep(0.5)
    shot(selkies, "up-selkies")
    selkies.close()

    # 5. SSH through the gateway with exactly the ~/.ssh/config block /hub/ssh shows (the real OpenSSH client).
    key, line = keygen(tmp_path, "alice")
    page.goto(f"{hub}/hub/ssh")
    page.fill("#ssh-keys", line)
    page.click("#ssh-save")
    page.locator("#ssh-saved").wait_for(timeout=30_000)
    blocks, known = page.inner_text("#ssh-gateway-config"), page.inner_text("#ssh-gateway-known-hosts")
    assert f"Port {up.gateway_port}" in blocks, blocks
    shot(page, "up-ssh")
    # The page's blocks: the gateway itself, then one Host per server (her default server's first), reached through it.
    alias = re.search(r"^Host\s+(\S+)\n(?:[ \t]+.*\n)*?[ \t]+ProxyCommand ", blocks, re.M).group(1)
    config, env = ssh_client_config(tmp_path, "alice", blocks, known, key)
    done = subprocess.run(["ssh", "-F", config, alias, "whoami"], capture_output=True, text=True, timeout=90,
                          env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "alice", (done.returncode, done.stdout, done.stderr, blocks)

    # 6. admin: the hub's admin page and devdock's, a token from the token page, then alice's server stopped.
    admin = context()
    apage = admin.new_page()
    # Straight to devdock's admin page: the login comes back to it (a login at the hub's root would start admin's
    # own server).
    assert log_in(apage, up, "admin", "/hub/devdock/admin") == hub
    apage.wait_for_url("**/hub/devdock/admin", timeout=60_000)
    apage.locator('tr[data-user="alice"]').wait_for(timeout=30_000)
    shot(apage, "up-devdock-admin")
    # The page's script takes over the form once it has loaded: a click before then submits the plain form (a GET
    # of the same page, and no token), as a person clicking early on a slow machine would see.
    apage.goto(f"{hub}/hub/token", wait_until="networkidle")
    apage.get_by_role("button", name=re.compile("request new api token", re.I)).click()
    apage.wait_for_function("document.getElementById('token-result').textContent.trim() !== ''", timeout=30_000)
    token = apage.locator("#token-result").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32,}", token), token

    # Idle culling is on: the hub runs jupyterhub-idle-culler as its service, 8 h for servers without GPUs.
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"
    services = api.get(f"{hub}/hub/api/services", timeout=30).json()  # by name
    culler = services.get("devdock-culler")
    assert culler and culler["pid"], services
    assert "jupyterhub_idle_culler" in culler["command"] and "--timeout=28800" in culler["command"], culler
    os.kill(culler["pid"], 0)  # the culler's process runs on this host

    apage.goto(f"{hub}/hub/admin")
    row = apage.locator('[data-testid="user-row-alice"]')
    row.wait_for(timeout=30_000)
    shot(apage, "up-admin")
    row.locator(".stop-button").click()
    row.locator(".start-button").wait_for(timeout=90_000)
    shot(apage, "up-admin-stopped")
    deadline = time.monotonic() + 60
    while engine.user_container("alice") is not None:
        assert time.monotonic() < deadline, "alice's container is still there a minute after the stop"
        time.sleep(0.5)
    assert engine.client.volumes.get(home["Name"])  # her home stays

    # Offboarding with the defaults: deleting alice removes her home and its image.
    assert api.delete(f"{hub}/hub/api/users/alice", timeout=120).status_code == 204
    assert not engine.client.volumes.list(filters={"name": home["Name"]})
    assert not (HOME_IMAGES / f"{home['Name']}.img").exists()
    (LOGS / "up-hub-log-tail.txt").write_text(up.log_tail(200))

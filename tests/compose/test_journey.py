"""The newcomer's journey on the compose stack, in Debian's Chromium, looking at the screen like a person.

hub -> identity provider -> sign in -> spawn form -> profile -> progress page -> JupyterLab -> desktop (drawn) ->
terminal (a command runs) -> another user is refused alice's lab and desktop -> an admin stops alice's server in
the admin panel -> her container is gone, her home stays. Screenshots: artifacts/screenshots/compose/.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time

from playwright.sync_api import Error as PlaywrightError

from tests.e2e.test_desktop_journey import desktop_drawn, frame_stats, wait_for_desktop_frame
from tests.harness import keygen, ssh_client_config

GB = 1024**3


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout}s")


def save_key_and_connect_through_the_gateway(person, folder, name: str, command: str):
    """``name`` saves a new key on their SSH page, copies the page's ~/.ssh/config block and known_hosts lines, and
    runs ``command`` with the real OpenSSH client through the stack's gateway (strict host-key checking).
    Returns (the finished ssh, its config path, its environment)."""
    key, line = keygen(folder, name)
    page = person.page
    page.goto(f"{person.stack.url}/hub/ssh")
    page.fill("#ssh-keys", line)
    page.click("#ssh-save")
    page.locator("#ssh-saved").wait_for(timeout=30_000)
    blocks, known = page.inner_text("#ssh-gateway-config"), page.inner_text("#ssh-gateway-known-hosts")
    config, env = ssh_client_config(folder, name, blocks, known, key)
    done = subprocess.run(["ssh", "-F", config, "devdock", command], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    return done, config, env


def test_journey_from_sign_in_to_admin_stop(stack, person, docker_client, tmp_path):
    alice = person()
    page = alice.page

    # 1. The hub sends a newcomer to the identity provider; alice signs in there.
    page.goto(stack.url + "/")
    alice.sign_in_at_idp("alice")

    # 2. The spawn form: alice is in the "gpu" group, so she sees the GPU profile (unavailable: no GPU here).
    page.wait_for_url(f"{stack.url}/hub/spawn**")
    assert page.locator("#profile-desktop").is_visible()
    assert page.locator("#profile-gpu").is_disabled()
    page.check("#profile-desktop")
    alice.shot("journey-spawn-form")

    # 3. Start: the progress page, then JupyterLab.
    page.get_by_role("button", name="Start").click()
    page.wait_for_url("**/hub/spawn-pending/alice**", timeout=30_000)
    with contextlib.suppress(PlaywrightError):  # the picture only: the server may be up before it is taken
        page.locator("#progress-message").filter(has_text=re.compile(r"\w")).wait_for(timeout=5_000)
        alice.shot("journey-progress")
    page.wait_for_url("**/user/alice/lab**", timeout=180_000)
    page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
    assert page.locator(".jp-LauncherCard", has_text="Desktop").count() >= 1
    alice.shot("journey-lab")
    assert any("/hub/spawn-pending/alice" in url for url in alice.visited)

    # The profile reached the container: the "desktop" profile's limits.
    container = stack.user_container(docker_client, "alice")
    assert container is not None and container.status == "running"
    host = container.attrs["HostConfig"]
    assert (host["CpuQuota"], host["CpuPeriod"], host["Memory"]) == (200_000, 100_000, 4 * GB)
    # Her home has the shipped size limit: an ext4 image of 50 GiB (less ext4's own), not the host's disk.
    home = next(m["Name"] for m in container.attrs["Mounts"] if m["Destination"] == "/home/alice")
    assert docker_client.volumes.get(home).attrs["Options"]["type"] == "ext4"
    df = container.exec_run(["df", "-B1", "--output=size", "/home/alice"]).output.decode().split()
    assert 48 * GB < int(df[-1]) <= 50 * GB, df

    # 4. The desktop: noVNC connects and the canvas shows a drawn XFCE desktop, not a black screen.
    page.goto(f"{stack.url}/user/alice/desktop/")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    png = wait_for_desktop_frame(page.locator("#screen canvas"))
    assert desktop_drawn(png), frame_stats(png)
    alice.shot("journey-desktop")

    # 5. A terminal from the launcher; what alice types runs as alice in her container.
    page.goto(f"{stack.url}/user/alice/lab")
    page.locator(".jp-LauncherCard", has_text="Terminal").first.click()
    page.wait_for_selector(".jp-Terminal .xterm", timeout=60_000)
    page.locator(".jp-Terminal .xterm").last.click()
    page.keyboard.type('echo "$(whoami) in $(hostname) made $((6 * 7))" | tee ~/journey.txt\n', delay=20)

    def proof():
        result = container.exec_run(["cat", "/home/alice/journey.txt"])
        return result.exit_code == 0 and result.output.decode().strip()

    assert wait_for(proof, 30, "the terminal command's output file").startswith("alice in ")
    assert proof().endswith(" made 42")
    time.sleep(1)  # let xterm draw the echoed line for the screenshot
    alice.shot("journey-terminal")
    # Her SSH page: she adds her key; the ~/.ssh/config block and known_hosts lines it shows take her real ssh
    # through the stack's one gateway port into her server, the host keys checked.
    over_ssh, _, _ = save_key_and_connect_through_the_gateway(alice, tmp_path, "alice", "cat ~/journey.txt")
    assert over_ssh.returncode == 0 and over_ssh.stdout.startswith("alice in "), over_ssh.stderr
    assert "SHA256:" in alice.page.locator(".ssh-gateway-fingerprint").inner_text()
    assert not container.attrs["HostConfig"]["PortBindings"]  # no port per server in the compose stack
    alice.shot("journey-ssh")

    # 6. bob, signed in too, cannot open alice's lab or desktop.
    bob = person()
    bob.sign_in("bob")
    for path in ("lab", "desktop/"):
        # At the address of alice's server (her own origin), where her server itself asks the hub about bob...
        response = bob.page.goto(stack.user_url("alice") + path)
        assert response.status == 403, (path, response.status, bob.page.url)
        assert bob.page.locator("#screen canvas").count() == 0
        assert bob.page.locator(".jp-LauncherCard").count() == 0
        # ...and at the hub's origin, which does not route to her server at all (the hub says it has none for bob).
        response = bob.page.goto(f"{stack.url}/user/alice/{path}")
        assert response.status in (403, 404), (path, response.status, bob.page.url)
        assert bob.page.locator("#screen canvas").count() == 0
        assert bob.page.locator(".jp-LauncherCard").count() == 0
    bob.shot("journey-other-user-refused")

    # 7. admin (an admin through the IdP's devdock-admins group) stops alice's server in the admin panel.
    admin = person()
    admin.sign_in("admin")
    # devdock's own admin page first: alice's server with its container, SSH port and use.
    admin.page.goto(f"{stack.url}/hub/devdock/admin")
    admin.page.locator('tr[data-user="alice"]').wait_for(timeout=30_000)
    admin.shot("journey-devdock-admin")
    admin.page.goto(f"{stack.url}/hub/admin")
    row = admin.page.locator('[data-testid="user-row-alice"]')
    row.locator(".stop-button").click()
    row.locator(".start-button").wait_for(timeout=60_000)
    admin.shot("journey-admin-stopped")

    wait_for(lambda: stack.user_container(docker_client, "alice") is None, 60, "alice's container removed")
    assert stack.api("GET", "/users/alice").json()["servers"] == {}
    # Her home stays for next time.
    homes = docker_client.volumes.list(filters={"label": ["io.devdock.owner=alice"]})
    assert [v.name for v in homes if v.name.startswith(stack.prefix + "-")], homes
    assert not (alice.off_site or bob.off_site or admin.off_site), (alice.off_site, bob.off_site, admin.off_site)

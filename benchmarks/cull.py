"""Giving GPUs back: how long an untouched open desktop holds its server (and GPU), and false culls of a used one.

    .venv/bin/python benchmarks/cull.py [--timeout 60] [--limit 300] [--active-minutes 3]

Two hubs side by side on the same engine and image, with the same idle timeout:
- **plain DockerSpawner + jupyterhub-idle-culler** as its README sets it up (JupyterHub's proxy class, whose
  per-route activity counts every proxied message, and the culler's default decision);
- **devdock** with its defaults (the proxy's activity ignored, desktop input from the X server, its culler policy).

Scenario 1, *forgotten tab*: Debian's Chromium opens the desktop (noVNC through the hub) and nobody touches it.
Measured: seconds from opening the desktop until the hub no longer lists the server (its GPU is then free), or
"still held" at --limit. Scenario 2, *person at work*: the pointer moves over the desktop every 20 s for
--active-minutes. Measured: false culls (0 is right). Both hubs are watched at once, in one browser.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import DEVDOCK, PLAIN, ROOT, harness, machine, table


def open_desktop(browser, hub: harness.Hub, user: str):
    """A person's browser: sign in, open the desktop (noVNC through the hub), leave the tab open."""
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("input#username_input", user)
    page.fill("input#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(f"**/user/{user}/**", timeout=180_000)
    page.goto(f"{hub.url}/user/{user}/desktop/")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    return page


def running(hub: harness.Hub, user: str) -> bool:
    return "" in hub.api("GET", f"/users/{user}").json()["servers"]


def watch(browser, hubs: dict, user: str, seconds: float, move_every: float | None) -> dict:
    """Open the desktop on every hub at once and wait ``seconds``; move the pointer every ``move_every`` s."""
    for hub in hubs.values():
        hub.spawn(user)
    pages = {name: open_desktop(browser, hub, user) for name, hub in hubs.items()}
    t0, moved, step = time.monotonic(), time.monotonic(), 0
    gone: dict[str, float] = {}
    while time.monotonic() - t0 < seconds and len(gone) < len(hubs):
        if move_every is not None and time.monotonic() - moved >= move_every:
            step += 1
            for name, page in pages.items():
                if name not in gone:
                    page.mouse.move(300 + 40 * (step % 9), 300 + 30 * (step % 7))
            moved = time.monotonic()
        for name, hub in hubs.items():
            if name not in gone and not running(hub, user):
                gone[name] = time.monotonic() - t0
                print(f"{user}: {name} stopped after {gone[name]:.0f} s", flush=True)
        time.sleep(1)
    for name, hub in hubs.items():
        pages[name].context.close()
        if running(hub, user):
            hub.stop_server(user)
    return {name: gone.get(name) for name in hubs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=int, default=60, help="idle timeout of both culls, seconds (default 60)")
    parser.add_argument("--limit", type=int, default=300, help="give up waiting for a cull after this (default 300)")
    parser.add_argument("--active-minutes", type=float, default=3, help="scenario 2's length (default 3)")
    args = parser.parse_args()

    client = harness.docker_client()
    harness.require_image(client)
    tmp = Path(tempfile.mkdtemp(prefix="devdock-cull-"))
    settings = {
        "DEVDOCK_CULL_TIMEOUT": str(args.timeout),
        "DEVDOCK_CULL_GPU_TIMEOUT": str(args.timeout),
        "DEVDOCK_CULL_EVERY": "5",
        "DEVDOCK_CULL_WARNING": "0",
        "DEVDOCK_ACTIVITY_INTERVAL": "10",
    }
    hubs = {
        PLAIN: harness.Hub(client, tmp / "plain", ROOT / "benchmarks/plain_culler_config.py", **settings),
        DEVDOCK: harness.Hub(client, tmp / "devdock", **settings),
    }
    empty = tmp / "empty_jupyter_server_config.py"
    empty.write_text("")
    for hub in hubs.values():
        hub.env["DEVDOCK_BENCH_EMPTY_FILE"] = str(empty)
    try:
        for hub in hubs.values():
            hub.start()
        with harness.chromium() as browser:
            forgotten = watch(browser, hubs, "forgotten", args.limit, None)
            active = watch(browser, hubs, "active", args.active_minutes * 60, 20.0)
    finally:
        for hub in hubs.values():
            hub.stop()
        harness.cleanup(client)

    def held(seconds: float | None) -> str:
        return f"{seconds:.0f} s, then freed" if seconds is not None else f"still held after {args.limit} s"

    rows = [
        ("untouched open desktop: server and GPU held for", held(forgotten[PLAIN]), held(forgotten[DEVDOCK])),
        (
            f"desktop in use for {args.active_minutes:g} min (pointer every 20 s): false culls",
            str(int(active[PLAIN] is not None)),
            str(int(active[DEVDOCK] is not None)),
        ),
    ]
    print()
    print(f"machine: {machine()}")
    print(
        f"idle timeout {args.timeout} s, culler every 5 s, activity reports every 10 s, proxy activity read every 15 s"
    )
    print(table(rows, ("scenario", PLAIN, DEVDOCK)))


if __name__ == "__main__":
    main()

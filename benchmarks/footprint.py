"""Idle memory of one server: DevDockSpawner vs plain DockerSpawner, same image, interleaved.

    .venv/bin/python benchmarks/footprint.py [-n 3] [--settle 15]

For each spawner: spawn, wait ``settle`` seconds, read the container's memory (cgroup usage minus
page cache, as ``docker stats`` shows it) with JupyterLab only; then open the desktop (the VNC server and
XFCE start), wait again and read it once more ("desktop session"). Medians and the ratio.
"""

from __future__ import annotations

import argparse
import time

from common import compare, harness, interleaved, side_by_side


def memory_mib(container) -> float:
    stats = container.stats(stream=False)["memory_stats"]
    cache = stats.get("stats", {}).get("inactive_file", stats.get("stats", {}).get("cache", 0))
    return (stats["usage"] - cache) / 2**20


def one(hub: harness.Hub, user: str, settle: float) -> dict:
    hub.spawn(user)
    # plain DockerSpawner's containers carry no io.devdock.owner label: find them by run label and name
    (container,) = [
        c
        for c in hub.client.containers.list(filters={"label": f"{harness.RUN_LABEL}={harness.RUN_ID}"})
        if c.name.endswith(f"-{user}")
    ]
    time.sleep(settle)
    lab_only = memory_mib(container)
    ws = harness.ws_connect(hub.server_url(user) + "desktop-websockify/", hub.token(user))
    ws.recv()
    time.sleep(settle)
    desktop = memory_mib(container)
    ws.close()
    hub.stop_server(user)
    return {"lab": lab_only, "desktop": desktop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--settle", type=float, default=15)
    args = parser.parse_args()
    with side_by_side("footprint") as hubs:
        results = interleaved(args.n, hubs, lambda hub, i: one(hub, f"mem{i}", args.settle))
    compare(
        results,
        [("lab", "idle, JupyterLab only", "MiB"), ("desktop", "idle desktop session", "MiB")],
        f"{args.n} rounds, interleaved; medians",
    )


if __name__ == "__main__":
    main()

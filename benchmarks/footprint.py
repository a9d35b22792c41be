"""Idle memory of one server: DevDockSpawner vs plain DockerSpawner, same image, interleaved.

    .venv/bin/python benchmarks/footprint.py [-n 3] [--settle 15]

For each spawner: spawn, wait ``settle`` seconds, read the container's memory (cgroup usage minus
page cache, as ``docker stats`` shows it) with JupyterLab only; then open the desktop (the VNC server and
XFCE start), wait again and read it once more ("desktop session"). Medians and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ROOT, harness, machine, median, table


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
    client = harness.docker_client()
    harness.require_image(client)
    tmp = Path(tempfile.mkdtemp(prefix="devdock-footprint-"))
    hubs = {
        "plain DockerSpawner": harness.Hub(client, tmp / "plain", ROOT / "benchmarks/plain_dockerspawner_config.py"),
        "devdock": harness.Hub(client, tmp / "devdock"),
    }
    results: dict[str, list[dict]] = {name: [] for name in hubs}
    try:
        for hub in hubs.values():
            hub.start()
        order = list(hubs)
        for i in range(args.n):
            for name in order if i % 2 == 0 else reversed(order):
                r = one(hubs[name], f"mem{i}", args.settle)
                results[name].append(r)
                print(f"round {i + 1} {name:19s} lab {r['lab']:.0f} MiB, desktop session {r['desktop']:.0f} MiB")
    finally:
        for hub in hubs.values():
            hub.stop()
        harness.cleanup(client)
    rows = []
    for key, label in (("lab", "idle, JupyterLab only"), ("desktop", "idle desktop session")):
        b = median([r[key] for r in results["plain DockerSpawner"]])
        o = median([r[key] for r in results["devdock"]])
        rows.append((label, f"{b:.0f} MiB", f"{o:.0f} MiB", f"{o / b:.2f}x"))
    print()
    print(f"machine: {machine()}")
    print(f"{args.n} rounds, interleaved; medians")
    print(table(rows, ("memory", "plain DockerSpawner", "devdock", "devdock / plain")))


if __name__ == "__main__":
    main()

"""Spawn -> ready and stop times: DevDockSpawner vs plain DockerSpawner, same image, interleaved.

    .venv/bin/python benchmarks/spawn.py [-n 5]

Two hubs run side by side on the same engine and image; spawns alternate between them (and which
goes first alternates too), so that a warm cache or a busy moment favours neither. Each round:
REST spawn until the hub reports the server ready, then the time until the desktop's VNC server
answers through the proxy (RFB banner), then REST stop until the hub no longer lists the server.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ROOT, harness, machine, median, table


def one_round(hub: harness.Hub, user: str) -> dict:
    t0 = time.perf_counter()
    hub.spawn(user)
    ready = time.perf_counter() - t0
    token = hub.token(user)
    ws = harness.ws_connect(hub.server_url(user) + "desktop-websockify/", token)
    ws.recv()
    ws.close()
    desktop = time.perf_counter() - t0
    t1 = time.perf_counter()
    hub.stop_server(user)
    stop = time.perf_counter() - t1
    return {"ready": ready, "desktop": desktop, "stop": stop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=5, help="rounds per spawner (default 5)")
    args = parser.parse_args()

    client = harness.docker_client()
    harness.require_image(client)
    tmp = Path(tempfile.mkdtemp(prefix="devdock-bench-"))
    hubs = {
        "devdock": harness.Hub(client, tmp / "devdock"),
        "plain DockerSpawner": harness.Hub(client, tmp / "plain", ROOT / "benchmarks/plain_dockerspawner_config.py"),
    }
    results: dict[str, list[dict]] = {name: [] for name in hubs}
    try:
        for hub in hubs.values():
            hub.start()
        # one unmeasured warm-up each (page cache, image layers)
        for hub in hubs.values():
            one_round(hub, "warmup")
        order = list(hubs)
        for i in range(args.n):
            for name in order if i % 2 == 0 else reversed(order):
                r = one_round(hubs[name], f"bench{i}")
                results[name].append(r)
                timings = ", ".join(f"{k} {v:.2f}s" for k, v in r.items())
                print(f"round {i + 1} {name:19s} {timings}")
    finally:
        for hub in hubs.values():
            hub.stop()
        harness.cleanup(client)

    base = results["plain DockerSpawner"]
    ours = results["devdock"]
    rows = []
    for key, label in (
        ("ready", "spawn -> ready"),
        ("desktop", "spawn -> desktop answers"),
        ("stop", "stop"),
    ):
        b, o = median([r[key] for r in base]), median([r[key] for r in ours])
        rows.append((label, f"{b:.2f} s", f"{o:.2f} s", f"{o / b:.2f}x"))
    print()
    print(f"machine: {machine()}")
    print(f"rounds: {args.n} per spawner, interleaved; medians")
    print(table(rows, ("metric", "plain DockerSpawner", "devdock", "devdock / plain")))


if __name__ == "__main__":
    main()

"""A compressed day of a lab on the real hub with stand-in GPUs: devdock with the line for GPUs against devdock
refusing when the GPUs are full (what it did before, and what every other tool does), side by side.

    .venv/bin/python benchmarks/lab_day.py [--users 15] [--gpus 3] [--hour 20] [--seed 7]

The same plan of a day runs on both hubs, one after the other: ``--users`` people arrive over the morning (the
first 40 % of an 8-hour day), each wants one GPU for one to three hours of work, and 40 % of them leave their tab
open and forget it (their server stays, idle); the others stop their server when done. ``--hour`` seconds stand
for an hour. Work is real use of the server (a JupyterLab API request every few seconds with the user's token);
the idle culler runs with the shipped limits scaled by the same factor (a GPU server idle for 2 h goes; while
someone waits, after 30 min; at most 2 h in line).

- **queue**: the shipped defaults: a start that finds the GPUs taken waits in line and starts by itself.
- **refuse**: ``gpu_queue`` off and no shorter idle limit under contention: a refused user tries again every
  10 minutes and gives up after 2 hours, as people do.

Printed per arm: GPU-hours held, the share of them held by active work (the rest: forgotten tabs until the
culler), the median and 90th percentile wait from the first click to a running server, and how many people got
no GPU at all.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from common import harness, machine, table

PROFILES = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "gpu", "display_name": "1 GPU", "gpus": 1},
]


@dataclass
class Person:
    name: str
    arrive: float  # seconds into the day
    work: float  # seconds of work once the server runs
    forgets: bool  # leaves the tab open instead of stopping
    clicked: float = 0.0
    ready: float | None = None
    worked_until: float | None = None
    gave_up: bool = False
    log: list = field(default_factory=list)


def plan(users: int, hour: float, seed: int) -> list[Person]:
    rng = random.Random(seed)
    day = 8 * hour
    return [
        Person(f"lab{i:02d}", rng.uniform(0, 0.4 * day), rng.uniform(1, 3) * hour, rng.random() < 0.4)
        for i in range(users)
    ]


def _running(hub: harness.Hub, name: str) -> dict:
    return hub.api("GET", f"/users/{name}").json()["servers"].get("", {})


def live(hub: harness.Hub, person: Person, t0: float, hour: float, queue: bool) -> None:
    """One person's day: arrive, start (waiting in line, or retrying when refused), work, stop or forget."""
    time.sleep(max(0.0, t0 + person.arrive - time.monotonic()))
    hub.create_user(person.name)
    person.clicked = time.monotonic() - t0
    give_up_at = time.monotonic() + 2 * hour
    while True:
        r = hub.api("POST", f"/users/{person.name}/server", json={"profile": "gpu"})
        if r.status_code in (201, 202):
            break
        if time.monotonic() >= give_up_at:
            person.gave_up = True
            return
        time.sleep(hour / 6)  # tries again in ten minutes
    deadline = give_up_at + 60 if queue else time.monotonic() + 120
    while True:
        server = _running(hub, person.name)
        if server.get("ready"):
            break
        if not server.get("pending") or time.monotonic() > deadline:
            person.gave_up = True  # the longest wait ended the start
            return
        time.sleep(0.5)
    person.ready = time.monotonic() - t0
    token = hub.token(person.name)
    end = time.monotonic() + person.work
    while time.monotonic() < end:  # real use of the server: JupyterLab API requests
        try:
            requests.get(hub.server_url(person.name) + "api/contents", headers={"Authorization": f"token {token}"},
                         timeout=10)  # fmt: skip
        except requests.RequestException:
            break  # culled while working: the end of this person's work
        time.sleep(3)
    person.worked_until = time.monotonic() - t0
    if not person.forgets:
        hub.api("DELETE", f"/users/{person.name}/server")


def run_day(arm: str, users: int, gpus: int, hour: float, seed: int, device_nodes: list[str]) -> dict:
    people = plan(users, hour, seed)
    uuids = [f"GPU-labday-0000-0000-0000-00000000000{i}" for i in range(gpus)]
    client = harness.docker_client()
    folder = Path(tempfile.mkdtemp(prefix=f"devdock-labday-{arm}-"))
    env = {
        "DEVDOCK_CULL_GPU_TIMEOUT": str(int(2 * hour)),
        "DEVDOCK_CULL_EVERY": "5",
        "DEVDOCK_CULL_WARNING": "1",
        "DEVDOCK_GPU_QUEUE_MAX_WAIT": str(int(2 * hour)),
        "DEVDOCK_CULL_GPU_CONTENTION_TIMEOUT": str(int(0.5 * hour)),
    }
    if arm == "refuse":
        env.update(DEVDOCK_GPU_QUEUE="0", DEVDOCK_CULL_GPU_CONTENTION_TIMEOUT="0")
    extra = harness.devices_mode_config(device_nodes[:gpus], uuids) + f"c.DevDockSpawner.profile_list = {PROFILES!r}\n"
    hub = harness.Hub(client, folder, extra_config=extra, **env)
    hub.start()
    try:
        t0 = time.monotonic()
        threads = [threading.Thread(target=live, args=(hub, p, t0, hour, arm == "queue")) for p in people]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # The day ends: what is still running (forgotten tabs the culler has not reached) is stopped and counted.
        for p in people:
            if _running(hub, p.name):
                hub.stop_server(p.name)
        runs = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/usage?format=json", timeout=30).json()["runs"]
    finally:
        hub.stop()
    held = sum(r["gpu_seconds_held"] for r in runs)
    active = sum(
        max(0.0, p.worked_until - p.ready) for p in people if p.ready is not None and p.worked_until is not None
    )
    waits = [p.ready - p.clicked for p in people if p.ready is not None]
    return {
        "arm": arm,
        "gpu_hours_held": held / hour,  # GPU-hours of the compressed day
        "active_share": active / held if held else float("nan"),
        "wait_median_min": statistics.median(waits) / hour * 60 if waits else float("nan"),
        "wait_p90_min": sorted(waits)[int(0.9 * (len(waits) - 1))] / hour * 60 if waits else float("nan"),
        "no_gpu": sum(1 for p in people if p.ready is None),
        "served": len(waits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=15)
    parser.add_argument("--gpus", type=int, default=3)
    parser.add_argument("--hour", type=float, default=20.0, help="seconds that stand for an hour (default 20)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    nodes = harness.make_device_nodes(Path(tempfile.mkdtemp(prefix="devdock-labday-dev-")), args.gpus)
    print(f"# lab day: {args.users} people, {args.gpus} GPUs, an hour = {args.hour:g} s, seed {args.seed}")
    print(f"# {machine()}")
    results = [run_day(arm, args.users, args.gpus, args.hour, args.seed, nodes) for arm in ("queue", "refuse")]
    rows = [
        (
            r["arm"],
            f"{r['gpu_hours_held']:.1f}",
            f"{r['active_share']:.0%}",
            f"{r['wait_median_min']:.0f}",
            f"{r['wait_p90_min']:.0f}",
            f"{r['served']}/{args.users}",
            r["no_gpu"],
        )
        for r in results
    ]
    print(table(rows, ("arm", "GPU-hours held", "held by active work", "wait median (min)", "wait p90 (min)",
                       "got a GPU", "got none")))  # fmt: skip
    q, f = results
    print(f"ratios queue/refuse: people served {q['served'] / max(1, f['served']):.2f}x, "
          f"share held by active work {q['active_share'] / f['active_share']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()

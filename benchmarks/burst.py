"""A class logging in at once: N concurrent REST spawns, DevDockSpawner vs plain DockerSpawner.

    .venv/bin/python benchmarks/burst.py [-n 20] [--rounds 1]

Both hubs use the same image, network and machine, each with its own defaults (plain DockerSpawner:
one Docker worker thread, JupyterHub's 30 s http_timeout; devdock: 8 workers, 90 s). The bursts run one
after the other (never both at once), alternating which goes first per round. Printed: failures and the
makespan (first request to last server ready) of each, and the ratio.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

from common import compare, harness, interleaved, side_by_side


def spawn_and_wait(hub: harness.Hub, user: str, timeout: float = 300) -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    hub.create_user(user)
    r = hub.api("POST", f"/users/{user}/server", json={})
    if r.status_code not in (201, 202):
        return False, time.perf_counter() - t0, r.text[:200]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = hub.api("GET", f"/users/{user}").json()["servers"].get("", {})
        if server.get("ready"):
            return True, time.perf_counter() - t0, ""
        if not server.get("pending"):
            return False, time.perf_counter() - t0, "spawn failed"
        time.sleep(0.5)
    return False, time.perf_counter() - t0, "timeout"


def burst(hub: harness.Hub, n: int, tag: str) -> dict:
    users = [f"{tag}{i:02d}" for i in range(n)]
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda u: spawn_and_wait(hub, u), users))
    makespan = max(t for ok, t, _ in results if ok) if any(ok for ok, _, _ in results) else float("nan")
    failures = [why for ok, _, why in results if not ok]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda u: hub.api("DELETE", f"/users/{u}/server"), users))
    for u in users:
        try:
            hub.stop_server(u, timeout=120)
        except AssertionError:
            pass
    if failures:
        print(f"    failures, e.g. {failures[:3]}")
    return {"failures": len(failures), "makespan": makespan, "wall": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with side_by_side("burst") as hubs:
        results = interleaved(
            args.rounds,
            hubs,
            lambda hub, r: burst(hub, args.n, f"b{r}{hub.data_dir.name[0]}"),
        )
    compare(
        results,
        [("failures", f"failures (of {args.n})", ""), ("makespan", "makespan (servers that started)", "s")],
        f"{args.n} concurrent REST spawns, {args.rounds} round(s) each; medians",
    )


if __name__ == "__main__":
    main()

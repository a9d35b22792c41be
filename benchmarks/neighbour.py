"""A busy neighbour: how fast one user's server answers while another user's server burns every CPU it may.

    .venv/bin/python benchmarks/neighbour.py [-n 200]

One devdock hub with its defaults (each server limited to 3/4 of the host's CPUs). Measured: the latency of
``GET /user/quiet/api/status`` through the hub's proxy, n requests, first with the neighbour idle, then with
the neighbour running one busy loop per host CPU (more than it may use). Printed side by side with the ratio;
the same run also shows what the neighbour actually got (its CPU limit at work).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests
from common import harness, machine, table


def latencies(url: str, token: str, n: int) -> list[float]:
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert session.get(url, timeout=30).status_code == 200
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="requests per phase (default 200)")
    args = parser.parse_args()
    client = harness.docker_client()
    harness.require_image(client)
    hub = harness.Hub(client, Path(tempfile.mkdtemp(prefix="devdock-neighbour-")))
    cpus = os.cpu_count() or 1
    try:
        hub.start()
        hub.spawn("quiet")
        hub.spawn("busy")
        url, token = hub.server_url("quiet") + "api/status", hub.token("quiet")
        latencies(url, token, 20)  # warm-up
        alone = latencies(url, token, args.n)
        busy = hub.container("busy")
        loops = " ".join(["sh -c 'while :; do :; done' &"] * cpus)
        busy.exec_run(["sh", "-c", f"{loops} sleep 600"], user="1000", detach=True)
        time.sleep(3)
        loaded = latencies(url, token, args.n)
        stats = busy.stats(stream=False)
        cpu, pre = stats["cpu_stats"], stats["precpu_stats"]
        got = (
            (cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"])
            / (cpu["system_cpu_usage"] - pre["system_cpu_usage"])
            * cpu.get("online_cpus", cpus)
        )
        limit = busy.attrs["HostConfig"]["CpuQuota"] / busy.attrs["HostConfig"]["CpuPeriod"]
    finally:
        hub.stop()
        harness.cleanup(client)

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[int(p) - 1]

    rows = [
        ("median", f"{statistics.median(alone):.1f} ms", f"{statistics.median(loaded):.1f} ms",
         f"{statistics.median(loaded) / statistics.median(alone):.2f}x"),
        ("p90", f"{q(alone, 90):.1f} ms", f"{q(loaded, 90):.1f} ms", f"{q(loaded, 90) / q(alone, 90):.2f}x"),
        ("p99", f"{q(alone, 99):.1f} ms", f"{q(loaded, 99):.1f} ms", f"{q(loaded, 99) / q(alone, 99):.2f}x"),
    ]  # fmt: skip
    print()
    print(f"machine: {machine()}")
    print(
        f"{args.n} requests per phase; the neighbour ran {cpus} busy loops, limited to {limit:.2f} CPUs, got {got:.2f}"
    )
    print(table(rows, ("GET api/status of another user's server", "neighbour idle", "neighbour busy", "busy / idle")))


if __name__ == "__main__":
    main()

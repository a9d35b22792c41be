"""SSH port allocation: devdock's allocator vs a faithful port of the old manager's scan.

    .venv/bin/python benchmarks/ports.py [--sizes 0 10 25 50] [--allocations 5]

The old manager searched upward from 1024: for each candidate port, a TCP connect to the host, then an
inspection of every container to see whether one of them had the port bound. Here both run against the
same real engine, side by side, with 0, 10, 25 and 50 (stopped) containers holding ports — stopped, as
servers of users who went home: their ports are reserved but nothing listens, which is the case the
connect test cannot see. Each container binds one port where the old scan looks (1024 + i) and one in
devdock's range (42000 + i), so both have the same conflicts to find.

Printed per size: milliseconds and Docker API calls per allocation, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time

import docker
from common import harness, machine, median, table

from devdock_spawner.naming import server_key
from devdock_spawner.ports import PortAllocator, held_ports, host_port_free

LABEL = "io.devdock.bench-ports"
BASE_IMAGE = "debian:bookworm-slim"


class CountingClient:
    """docker.APIClient that counts the API calls made through it."""

    def __init__(self, client: docker.APIClient):
        self.client = client
        self.calls = 0

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return method(*args, **kwargs)

        return counted


def old_scan(api: CountingClient, host: str = "127.0.0.1") -> int:
    """The old manager's allocation, ported faithfully: connect, then inspect every container."""
    port = 1024
    while port < 65536:
        with socket.socket() as s:
            s.settimeout(0.2)
            listening = s.connect_ex((host, port)) == 0
        if not listening:
            taken = False
            for c in api.containers(all=True):
                info = api.inspect_container(c["Id"])
                for bindings in (info["HostConfig"].get("PortBindings") or {}).values():
                    if any(str(port) == b.get("HostPort") for b in bindings or []):
                        taken = True
            if not taken:
                return port
        port += 1
    raise RuntimeError("no port")


def ours(api: CountingClient, allocator: PortAllocator, cache: dict, key: str) -> int:
    async def call(method, *args, **kwargs):
        return getattr(api, method)(*args, **kwargs)

    held = asyncio.run(held_ports(call, "io.devdock.ssh-port", cache))
    return allocator.allocate(key, held)


def make_holders(client: docker.DockerClient, n: int) -> None:
    for i in range(n):
        client.containers.create(
            BASE_IMAGE,
            ["sleep", "infinity"],
            name=f"{harness.PREFIX}-portholder-{i}",
            labels={LABEL: "1", harness.RUN_LABEL: harness.RUN_ID},
            ports={"22/tcp": ("127.0.0.1", 1024 + i), "2222/tcp": ("127.0.0.1", 42000 + i)},
        )


def remove_holders(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        c.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 10, 25, 50])
    parser.add_argument("--allocations", type=int, default=5, help="allocations measured per size (default 5)")
    args = parser.parse_args()

    client = harness.docker_client()
    client.images.get(BASE_IMAGE)
    api = CountingClient(client.api)
    rows = []
    try:
        for n in args.sizes:
            remove_holders(client)
            make_holders(client, n)
            # The old scan: the same first free port each time (nothing is reserved in between).
            old_ms, old_calls = [], []
            for _ in range(args.allocations):
                api.calls, t = 0, time.perf_counter()
                old_scan(api)
                old_ms.append((time.perf_counter() - t) * 1000)
                old_calls.append(api.calls)
            # devdock: a fresh hub (empty cache) makes several allocations for different users.
            allocator = PortAllocator(42000, 42999, probe=lambda p: host_port_free("127.0.0.1", p))
            cache: dict = {}
            new_ms, new_calls = [], []
            for i in range(args.allocations):
                api.calls, t = 0, time.perf_counter()
                ours(api, allocator, cache, server_key(f"user{i}"))
                new_ms.append((time.perf_counter() - t) * 1000)
                new_calls.append(api.calls)
            om, nm = median(old_ms), median(new_ms)
            rows.append(
                (
                    n,
                    f"{om:.1f} ms",
                    f"{median(old_calls):.0f}",
                    f"{nm:.1f} ms",
                    f"{median(new_calls):.0f} (first: {new_calls[0]})",
                    f"{om / nm:.0f}x",
                    f"{median(old_calls) / median(new_calls):.0f}x",
                )
            )
            print(f"{n} containers: old {om:.1f} ms / {median(old_calls):.0f} calls, devdock {nm:.1f} ms", flush=True)
    finally:
        remove_holders(client)
    print()
    print(f"machine: {machine()}")
    print(f"{args.allocations} allocations per size; medians; containers are stopped and hold ports")
    print(
        table(
            rows,
            ("containers", "old scan", "old API calls", "devdock", "devdock API calls", "time ratio", "calls ratio"),
        )
    )


if __name__ == "__main__":
    main()

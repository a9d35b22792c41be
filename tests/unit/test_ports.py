"""The SSH port allocator: stable reuse, conflicts, exhaustion and concurrency (tables)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket

import pytest

from devdock_spawner.naming import server_key
from devdock_spawner.ports import (
    NoFreePort,
    PortAllocator,
    held_ports,
    host_port_free,
    port_taken,
    ports_from_containers,
)


def test_same_key_gets_the_same_port_again():
    a = PortAllocator(42000, 42999)
    first = a.allocate("alice/")
    assert a.allocate("alice/") == first
    assert a.allocate("alice/", preferred=42999) == first  # an existing reservation wins


def test_home_port_is_the_same_on_every_hub():
    assert PortAllocator(42000, 42999).home_port("alice/") == PortAllocator(42000, 42999).home_port("alice/")
    assert PortAllocator(42000, 42999).allocate("alice/") == PortAllocator(42000, 42999).allocate("alice/")


def test_preferred_port_from_state_is_kept_when_free():
    assert PortAllocator(42000, 42999).allocate("alice/", preferred=42123) == 42123


# (id, held by Docker, preferred, expected): a 3-port range 100-102 with the key "k" whose home port is
# computed, so the table names ports relative to nothing but the range.
CONFLICTS = [
    ("preferred-held-by-other-container", {101: "other/"}, 101, "not-101"),
    ("preferred-held-by-foreign-container", {101: None}, 101, "not-101"),
    ("preferred-held-by-own-container", {101: "k"}, 101, 101),
    ("all-but-one-held", {100: None, 101: "x/"}, None, 102),
    ("out-of-range-preference-ignored", {}, 99, "in-range"),
]


@pytest.mark.parametrize(("held", "preferred", "expected"), [c[1:] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS])
def test_conflicts_with_containers(held, preferred, expected):
    port = PortAllocator(100, 102).allocate("k", held, preferred)
    if expected == "not-101":
        assert port != 101 and 100 <= port <= 102
    elif expected == "in-range":
        assert 100 <= port <= 102
    else:
        assert port == expected


def test_busy_host_port_is_skipped():
    a = PortAllocator(100, 102, probe=lambda port: port != a.home_port("k"))
    assert a.allocate("k") != a.home_port("k")


def test_exhausted_range_says_what_to_do():
    a = PortAllocator(100, 101)
    a.allocate("a/")
    a.allocate("b/")
    with pytest.raises(NoFreePort, match="ssh_port_range"):
        a.allocate("c/")


def test_port_docker_refused_is_never_handed_out_again():
    a = PortAllocator(100, 101)
    bad = a.allocate("a/")
    a.mark_unusable(bad)
    assert a.allocate("a/") != bad
    with pytest.raises(NoFreePort):
        a.allocate("b/")


def test_release_frees_the_port():
    a = PortAllocator(100, 100)
    a.allocate("a/")
    a.release("a/")
    assert a.allocate("b/") == 100


def test_remember_claims_ports_from_state_before_anyone_else():
    a = PortAllocator(100, 101)
    a.remember("stopped/", 100)
    assert a.allocate("new/") == 101
    assert a.allocate("stopped/") == 100


def test_1000_concurrent_allocations_never_duplicate():
    a = PortAllocator(40000, 40999)
    keys = [f"user{i}/" for i in range(1000)]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        ports = list(pool.map(a.allocate, keys))
    assert len(set(ports)) == 1000
    assert all(40000 <= p <= 40999 for p in ports)


def test_1000_concurrent_spawns_on_one_event_loop_never_duplicate():
    a = PortAllocator(40000, 40999)

    async def spawn(i):
        await asyncio.sleep(0)
        return a.allocate(f"user{i}/")

    async def main():
        return await asyncio.gather(*(spawn(i) for i in range(1000)))

    assert len(set(asyncio.run(main()))) == 1000


def test_ports_from_one_docker_listing():
    containers = [
        {"Labels": {"io.devdock.owner": "alice", "io.devdock.server": "", "io.devdock.ssh-port": "42001"}, "Ports": []},
        {
            "Labels": {"io.devdock.owner": "bob", "io.devdock.server": "gpu", "io.devdock.ssh-port": "42002"},
            "Ports": [{"PrivatePort": 2222, "PublicPort": 42002, "Type": "tcp"}],
        },
        {"Labels": {}, "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}, {"PrivatePort": 9}]},
    ]
    assert ports_from_containers(containers, "io.devdock.ssh-port") == {
        42001: server_key("alice", ""),
        42002: server_key("bob", "gpu"),
        8080: None,
    }


def test_host_port_probe_sees_a_listening_socket():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert host_port_free("127.0.0.1", busy) is False
    assert host_port_free("127.0.0.1", busy) is True


def test_invalid_range_is_refused():
    with pytest.raises(ValueError):
        PortAllocator(2000, 1000)


def test_held_ports_needs_one_call_once_foreign_stopped_containers_are_known():
    calls = []
    listing = [
        {"Id": "ours", "State": "exited", "Labels": {"io.devdock.owner": "a", "io.devdock.ssh-port": "42001"}},
        {"Id": "web", "State": "running", "Labels": {}, "Ports": [{"PublicPort": 8080}]},
        {"Id": "old", "State": "exited", "Labels": {}, "Ports": []},
    ]
    inspect = {"old": {"HostConfig": {"PortBindings": {"2222/tcp": [{"HostIp": "", "HostPort": "1025"}]}}}}

    async def docker(method, *args, **kwargs):
        calls.append(method)
        return listing if method == "containers" else inspect[args[0]]

    cache: dict = {}
    held = asyncio.run(held_ports(docker, "io.devdock.ssh-port", cache))
    assert held == {42001: "a/", 8080: None, 1025: None}
    assert calls == ["containers", "inspect_container"]
    calls.clear()
    assert asyncio.run(held_ports(docker, "io.devdock.ssh-port", cache)) == held
    assert calls == ["containers"]  # the steady state: one call
    listing.pop()
    asyncio.run(held_ports(docker, "io.devdock.ssh-port", cache))
    assert cache == {}  # removed containers are forgotten


@pytest.mark.parametrize(
    ("message", "taken"),
    [
        (
            "driver failed programming external connectivity: Bind for 0.0.0.0:42001 failed: port is already allocated",
            True,
        ),
        ("listen tcp4 0.0.0.0:42001: bind: address already in use", True),
        ("Error starting userland proxy: listen tcp 0.0.0.0:42001: bind: Address already in use", True),
        ("OCI runtime create failed: unable to start container process", False),
        ("no suitable node (insufficient resources on 1 node)", False),
    ],
    ids=["docker-proxy", "kernel", "kernel-capitalised", "other-error", "no-node"],
)
def test_port_taken_reads_the_engines_words(message, taken):
    assert port_taken(message) is taken

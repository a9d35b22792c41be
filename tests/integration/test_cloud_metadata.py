"""Cloud metadata out of users' reach (``block_cloud_metadata``), proven without a packet to 169.254.169.254 on this
machine's own network (these machines may be cloud VMs):

- the rule's effect, in network namespaces the test makes: a "container" namespace routed through a "host"
  namespace (Docker's ``DOCKER-USER`` chain jumped to from ``FORWARD``, as Docker sets it up) to a namespace that
  owns 169.254.169.254 and a neighbour address; devdock's own script adds the rule there;
- the rule a real hub adds on this host for its network's subnet, read back with ``iptables -S`` and its counters.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from devdock_spawner import cloud_metadata
from devdock_spawner.container import network_spec
from tests.harness import RUN_ID, RUN_LABEL, remove_cloud_metadata_rules

METADATA, NEIGHBOUR, PORT = "169.254.169.254", "169.254.169.253", 8080

SERVER = (
    f"PORT = {PORT}\n"
    """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", PORT))
s.listen(8)
while True:
    c, _ = s.accept()
    c.sendall(b"metadata-answer")
    c.close()
"""
)

CLIENT = (
    f"PORT = {PORT}\n"
    """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], PORT), timeout=5) as c:
        print(c.recv(100).decode())
except OSError as e:
    print(type(e).__name__)
"""
)


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def namespaces():
    """container --veth-- host (forwards, DOCKER-USER) --veth-- metadata (its loopback owns METADATA and
    NEIGHBOUR). Nothing connects them to this machine's own network."""
    tag = uuid.uuid4().hex[:6]
    ns = {role: f"dd-{role[:4]}-{tag}" for role in ("container", "host", "metadata")}
    server = None
    try:
        for name in ns.values():
            _run("ip", "netns", "add", name)
        c, h, m = ns["container"], ns["host"], ns["metadata"]
        _run("ip", "link", "add", f"c{tag}", "netns", c, "type", "veth", "peer", "name", f"h{tag}", "netns", h)
        _run("ip", "link", "add", f"g{tag}", "netns", h, "type", "veth", "peer", "name", f"m{tag}", "netns", m)
        steps = [
            (c, "ip addr add 10.231.0.2/24 dev c{t}"), (c, "ip link set c{t} up"), (c, "ip link set lo up"),
            (c, "ip route add default via 10.231.0.1"),
            (h, "ip addr add 10.231.0.1/24 dev h{t}"), (h, "ip link set h{t} up"),
            (h, "ip addr add 10.232.0.1/24 dev g{t}"), (h, "ip link set g{t} up"),
            (h, "ip route add 169.254.169.0/24 via 10.232.0.2"), (h, "sysctl -qw net.ipv4.ip_forward=1"),
            (m, "ip addr add 10.232.0.2/24 dev m{t}"), (m, "ip link set m{t} up"), (m, "ip link set lo up"),
            (m, f"ip addr add {METADATA}/32 dev lo"), (m, f"ip addr add {NEIGHBOUR}/32 dev lo"),
            (m, "ip route add default via 10.232.0.1"),
            # What Docker sets up on a host: FORWARD jumps to DOCKER-USER first.
            (h, "iptables-nft -N DOCKER-USER"), (h, "iptables-nft -A DOCKER-USER -j RETURN"),
            (h, "iptables-nft -I FORWARD 1 -j DOCKER-USER"),
        ]  # fmt: skip
        for name, step in steps:
            _run("ip", "netns", "exec", name, *step.format(t=tag).split())
        server = subprocess.Popen(["ip", "netns", "exec", m, sys.executable, "-c", SERVER])
        yield ns
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _connect(ns: dict, address: str) -> str:
    deadline = time.monotonic() + 10
    while True:  # the server in the metadata namespace may still be starting
        out = _run("ip", "netns", "exec", ns["container"], sys.executable, "-c", CLIENT, address).strip()
        if out != "ConnectionRefusedError" or time.monotonic() > deadline or address == METADATA:
            return out
        time.sleep(0.2)


def test_cloud_metadata_rule_rejects_the_metadata_address_and_nothing_else_in_namespaces_the_test_made(namespaces):
    ns = namespaces
    # Positive controls: without the rule, the "container" reaches both addresses through the "host".
    assert _connect(ns, NEIGHBOUR) == "metadata-answer"
    assert _connect(ns, METADATA) == "metadata-answer"
    # devdock's own script, in the "host" namespace, for the "container"'s subnet; twice adds it once.
    script = cloud_metadata.block_script("devdock", ["10.231.0.0/24"])
    for _ in range(2):
        used = _run("ip", "netns", "exec", ns["host"], "sh", "-c", script)
        assert "iptables-nft" in used
    listing = _run("ip", "netns", "exec", ns["host"], "iptables-nft", "-S", "DOCKER-USER")
    assert cloud_metadata.blocked_pairs(listing, "devdock") == {("10.231.0.0/24", "169.254.169.254/32")}
    assert listing.count("no cloud metadata") == 1, listing

    assert _connect(ns, METADATA) == "ConnectionRefusedError"  # rejected at once, not a timeout
    assert _connect(ns, NEIGHBOUR) == "metadata-answer"  # the neighbour address still answers
    counters = _run("ip", "netns", "exec", ns["host"], "iptables-nft", "-L", "DOCKER-USER", "-v", "-n", "-x")
    rule = next(line for line in counters.splitlines() if "REJECT" in line)
    assert int(rule.split()[0]) >= 1, counters  # the refused connection went through the rule


def _host_rules(network: str) -> set:
    return cloud_metadata.blocked_pairs(_run("iptables", "-S", "DOCKER-USER"), network)


def test_a_hub_adds_the_cloud_metadata_rule_for_its_networks_subnet_unless_switched_off(
    docker_client, tmp_path, make_hub
):
    """A real hub's first spawn adds the rule to this host's DOCKER-USER for its network's subnet (read back, not
    tried: no packet goes to 169.254.169.254 from here); with DEVDOCK_BLOCK_CLOUD_METADATA=0 it adds none."""
    network = f"devdock-test-{RUN_ID}-meta"
    created = docker_client.api.create_network(**network_spec(network, labels={RUN_LABEL: RUN_ID}))
    net = docker_client.networks.get(created["Id"])
    subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
    gateway = net.attrs["IPAM"]["Config"][0]["Gateway"]
    hub = make_hub(data_dir=tmp_path / "hub", start=False, DEVDOCK_NETWORK=network, DEVDOCK_HUB_IP=gateway,
        DEVDOCK_BLOCK_CLOUD_METADATA="0",
    )  # fmt: skip
    try:
        hub.start()
        hub.spawn("meta-off")
        assert _host_rules(network) == set()  # switched off: no rule
        hub.stop_server("meta-off")
        hub.stop()
        hub.env["DEVDOCK_BLOCK_CLOUD_METADATA"] = "1"
        hub.start()
        hub.spawn("meta-on")
        assert _host_rules(network) == {(subnet, "169.254.169.254/32")}
        assert "cannot reach 169.254.169.254" in hub.log_tail(300)
        container = hub.container("meta-on")
        assert container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]  # it is on that subnet
        hub.stop_server("meta-on")
    finally:
        hub.stop()
        remove_cloud_metadata_rules(network)
        for c in docker_client.containers.list(all=True, filters={"network": network}):
            c.remove(force=True)
        net.remove()

"""Fixtures of the swarm tier: a real swarm on this engine, a hub on its overlay network, a second node."""

from __future__ import annotations

import random
import secrets

import pytest

from tests import harness
from tests.swarm.cluster import Cluster

PROFILES = """
c.DevDockSwarmSpawner.profile_list = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "gpu", "display_name": "1 GPU", "gpus": 1, "placement": ["node.labels.gpu-model == fake"]},
    {"slug": "node2", "display_name": "On node 2", "placement": ["node.hostname == devdock-node2"]},
    {"slug": "every-gpu", "display_name": "All GPUs", "gpus": "all"},
    {"slug": "no-image", "display_name": "Missing image", "overrides": {"image": "devdock/not-built:latest"}},
    {"slug": "not-on-node2", "display_name": "An image node 2 lacks",
     "placement": ["node.hostname == devdock-node2"], "overrides": {"image": "devdock/desktop:only-on-the-hub"}},
]
c.DevDockSwarmSpawner.start_timeout = 90
"""


@pytest.fixture(scope="package")
def cluster(docker_client):
    harness.require_image(docker_client, "devdock/swarm-node:latest")
    c = Cluster(docker_client)
    try:
        c.up()
        yield c
    finally:
        c.down()


GATEWAY_TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="package")
def swarm_hub(docker_client, cluster, tmp_path_factory):
    low = random.randrange(44000, 47900, 100)
    h = harness.Hub(
        docker_client,
        tmp_path_factory.mktemp("swarm-hub"),
        extra_config=PROFILES,
        DEVDOCK_SSH_PORTS=f"{low}-{low + 99}",
        # SSH both ways: a port per server on its node, and the gateway (swarm_gateway) for everyone.
        DEVDOCK_SSH_MODE="both",
        DEVDOCK_SSH_GATEWAY_TOKEN=GATEWAY_TOKEN,
        DEVDOCK_SSH_GATEWAY_PORT=str(low + 100),
        DEVDOCK_SSH_GATEWAY_HOST=cluster.hub_address,
        DEVDOCK_GPU_PER_USER="1",  # one GPU per person: test_two_nodes checks Swarm applies the cap
        **cluster.hub_settings(),
    )
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="package")
def swarm_gateway(docker_client, cluster, swarm_hub, tmp_path_factory):
    """The SSH gateway where it runs on a Swarm: on the users' overlay network (here in the anchor's namespace,
    beside the hub), so that it reaches servers on any node."""
    gateway = harness.Gateway(
        docker_client, swarm_hub.url, GATEWAY_TOKEN, int(swarm_hub.env["DEVDOCK_SSH_GATEWAY_PORT"]),
        tmp_path_factory.mktemp("swarm-gateway"), network_mode=f"container:{cluster.anchor_name}",
        host=cluster.hub_address,
    )  # fmt: skip
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.remove()


@pytest.fixture(scope="package")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("swarm-keys")
    return {name: harness.keygen(d, name) for name in ("sw1", "sw2")}

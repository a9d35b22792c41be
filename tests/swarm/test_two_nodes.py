"""devdock on a two-node swarm: a second engine (in a container) with fake GPUs joins; servers run there.

The fake GPUs are named generic resources of the second engine (``--node-generic-resource NVIDIA-GPU=...``):
generic resources can only be set when a daemon starts, so they go on the engine the run starts itself,
not on the shared one the tests run on.
"""

from __future__ import annotations

import io

import docker
import pytest
import requests

from devdock_spawner import swarm
from tests.harness import RUN_ID, RUN_LABEL, run_in_terminal, ssh, xsrf_from
from tests.swarm.cluster import FAKE_GPUS, GPU_KIND, idle_service, service_of, wait_for


@pytest.fixture(scope="module")
def node2(cluster):
    cluster.add_node()
    return cluster


def task_of(docker_client, name: str) -> dict:
    tasks = [t for t in service_of(docker_client, name).tasks() if t["Status"]["State"] == "running"]
    assert len(tasks) == 1, tasks
    return tasks[0]


def test_profile_pinned_to_a_node_runs_there_and_is_reachable(docker_client, swarm_hub, node2, keys):
    swarm_hub.save_ssh_keys("ema", keys["sw2"][1])
    swarm_hub.spawn("ema", options={"profile": "node2"})
    task = task_of(docker_client, "ema")
    assert task["NodeID"] == node2.node2
    url, token = swarm_hub.server_url("ema"), swarm_hub.token("ema")
    r = requests.get(url + "api/status", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    output = run_in_terminal(url, token, "echo on-node2 > ~/where.txt && echo wr''ote", expect="wrote\r")
    assert "wrote" in [line.strip() for line in output.splitlines()], output
    # SSH goes to the node that runs the server, and users are told that node's address.
    state = swarm_hub.server_state("ema")
    assert state["swarm_ssh_host"] == node2.node2_addr
    assert state["swarm_node_name"] == node2.node2_hostname
    result = ssh(state["ssh_port"], "ema", keys["sw2"][0], "whoami", host=node2.node2_addr)
    assert result.returncode == 0 and result.stdout.strip() == "ema", result.stderr
    # Docker cannot reach into containers on another node: saving keys says they apply at the next start.
    session = swarm_hub.browser_session("ema")
    page = session.get(f"{swarm_hub.url}/hub/ssh", timeout=30)
    saved = session.post(
        f"{swarm_hub.url}/hub/ssh", data={"keys": keys["sw2"][1], "_xsrf": xsrf_from(page.text)}, timeout=30
    )
    assert saved.status_code == 200 and 'id="ssh-restart-needed"' in saved.text


def test_home_pins_the_server_to_its_node(docker_client, swarm_hub, node2):
    """With node-local homes, ema's next server goes back to node 2 even with a profile that does not ask,
    and although node 2 is the busier node (Swarm's spread strategy alone would pick node 1)."""
    swarm_hub.stop_server("ema")
    ballast = idle_service(
        docker_client, "ballast", mode=docker.types.ServiceMode("replicated", replicas=3),
        constraints=[f"node.id == {node2.node2}"],
    )  # fmt: skip
    try:
        wait_for(lambda: len([t for t in ballast.tasks() if t["Status"]["State"] == "running"]) == 3, 60, "ballast")
        swarm_hub.spawn("ema", options={"profile": "desktop"})
    finally:
        ballast.remove()
    assert task_of(docker_client, "ema")["NodeID"] == node2.node2
    url, token = swarm_hub.server_url("ema"), swarm_hub.token("ema")
    assert "on-node2" in run_in_terminal(url, token, "cat ~/where.txt", expect="on-node2\r")
    swarm_hub.stop_server("ema")


def test_gpu_profiles_reserve_distinct_devices_and_the_third_is_refused(docker_client, swarm_hub, node2):
    swarm_hub.spawn("gus", options={"profile": "gpu"})
    # gpu_max_per_user (1 on this hub): gus's second server may not take the GPU that is still free...
    r = swarm_hub.api("POST", "/users/gus/servers/second", json={"profile": "gpu"})
    assert r.status_code == 409, r.text
    assert (
        "You already hold 1 GPU in your other servers, and this profile asks for 1: at most 1 per person"
        in (r.json()["message"])
    ), r.json()
    assert service_of(docker_client, "gus", "second") is None
    # ...and another person may (the positive control: the GPU was free).
    swarm_hub.spawn("gia", options={"profile": "gpu"})
    seen = {}
    for name in ("gus", "gia"):
        task = task_of(docker_client, name)
        assert task["NodeID"] == node2.node2  # the only node with GPUs (and the gpu-model label)
        resources = service_of(docker_client, name).attrs["Spec"]["TaskTemplate"]["Resources"]
        assert resources["Reservations"]["GenericResources"] == [
            {"DiscreteResourceSpec": {"Kind": GPU_KIND, "Value": 1}}
        ]
        assigned = swarm.task_generic_resources(task, GPU_KIND)
        assert len(assigned) == 1 and assigned[0] in FAKE_GPUS, sorted(task)
        # What the hub shows is what the scheduler picked, and what the container was given.
        assert swarm_hub.server_state(name)["gpu_ids"] == assigned
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        env = node2.node_exec("docker", "exec", container, "printenv", f"DOCKER_RESOURCE_{GPU_KIND}")
        assert env.strip() == assigned[0]
        seen[name] = assigned[0]
    assert seen["gus"] != seen["gia"]
    page = swarm_hub.browser_session("admin").get(f"{swarm_hub.url}/hub/devdock/admin", timeout=30).text
    for name, gpu in seen.items():
        assert gpu in page and name in page
    assert node2.node2_hostname in page

    swarm_hub.create_user("gil")
    r = swarm_hub.api("POST", "/users/gil/server", json={"profile": "gpu"})
    assert r.status_code == 409, r.text
    # Refused by devdock's own check, before anything was created (not by Swarm's scheduler later).
    assert "Not enough free GPUs right now" in r.json()["message"], r.json()
    assert "0 of 2 free" in r.json()["message"]
    assert service_of(docker_client, "gil") is None

    # When the stop returns, the service and its task are gone: the GPU is free again at once.
    swarm_hub.stop_server("gus")
    assert docker_client.api.tasks(filters={"label": "io.devdock.owner=gus"}) == []
    swarm_hub.spawn("gil", options={"profile": "gpu"})
    assert swarm_hub.server_state("gil")["gpu_ids"] == [seen["gus"]]
    for name in ("gia", "gil"):
        swarm_hub.stop_server(name)


def test_spawn_form_counts_the_clusters_free_gpus(swarm_hub, node2):
    swarm_hub.spawn("gus", options={"profile": "gpu"})
    try:
        page = swarm_hub.browser_session("hana").get(f"{swarm_hub.url}/hub/spawn", timeout=30).text
        assert f"GPUs in this cluster: <strong>1 of {len(FAKE_GPUS)} free</strong>" in page, page[:3000]
    finally:
        swarm_hub.stop_server("gus")


def test_a_home_on_a_drained_node_is_refused_with_a_sentence(docker_client, swarm_hub, node2):
    """ema's home is on node 2 (see above); while node 2 is drained her server cannot start, and she is told so."""
    node = docker_client.nodes.get(node2.node2)
    spec = node.attrs["Spec"]
    node.update({**spec, "Availability": "drain"})
    try:
        swarm_hub.create_user("ema")
        r = swarm_hub.api("POST", "/users/ema/server", json={"profile": "desktop"})
        assert r.status_code == 503, r.text
        assert f"Your home is on node {node2.node2_hostname}, which is drained now" in r.json()["message"]
        assert service_of(docker_client, "ema") is None
    finally:
        node.reload()
        node.update({**node.attrs["Spec"], "Availability": "active"})


def test_an_image_the_node_lacks_is_reported_in_swarms_words(docker_client, swarm_hub, node2):
    """An image the hub's engine has (so its ID is known) but node 2 does not: Swarm rejects the task there."""
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(b"FROM devdock/desktop:latest\nLABEL io.devdock.test=only-on-the-hub\n"),
        tag="devdock/desktop:only-on-the-hub", labels={RUN_LABEL: RUN_ID}, rm=True, forcerm=True,
    )  # fmt: skip
    swarm_hub.create_user("ivy")
    try:
        r = swarm_hub.api("POST", "/users/ivy/server", json={"profile": "not-on-node2"})
    finally:
        docker_client.images.remove(image.id, force=True)
    assert r.status_code == 500, r.text
    assert "Swarm could not start the server (rejected: No such image" in r.json()["message"], r.json()
    assert service_of(docker_client, "ivy") is None


def test_gateway_reaches_a_server_on_the_second_node_over_the_overlay(docker_client, swarm_hub, node2, keys,
                                                                      swarm_gateway):  # fmt: skip
    swarm_hub.save_ssh_keys("gus", keys["sw1"][1])
    swarm_hub.spawn("gus", options={"profile": "node2"})
    assert task_of(docker_client, "gus")["NodeID"] == node2.node2
    # The user's own ssh, relayed by the gateway (on the hub's side of the overlay) to the task on node 2.
    relay = (
        f"ssh -p {swarm_gateway.port} -i {keys['sw1'][0]} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null devdock@{swarm_gateway.host} gus"
    )
    result = ssh(22, "gus", keys["sw1"][0], "whoami; cat /etc/hostname", f"-o ProxyCommand={relay}", host="devdock")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "gus"
    assert swarm_hub.server_state("gus")["swarm_node_name"] == node2.node2_hostname
    # Positive control for "it went over the overlay": the published port on node 2 reaches the same server.
    direct = ssh(swarm_hub.server_state("gus")["ssh_port"], "gus", keys["sw1"][0], "cat /etc/hostname",
                 host=node2.node2_addr)  # fmt: skip
    assert direct.stdout.split() == result.stdout.split()[1:], (direct.stdout, result.stdout)
    assert "gus -> gus's default server" in swarm_gateway.logs()
    swarm_hub.stop_server("gus")

"""devdock on a single-node Docker Swarm: each server is a one-task service, reached through the hub's proxy."""

from __future__ import annotations

import time

import docker
import pytest
import requests

from devdock_spawner.naming import server_key
from devdock_spawner.ports import PortAllocator
from tests.harness import RUN_ID, RUN_LABEL, assert_desktop_answers, run_in_terminal, ssh
from tests.swarm.cluster import SWARM_IMAGE, idle_service, service_of


@pytest.fixture(scope="module")
def ana(swarm_hub, keys):
    swarm_hub.save_ssh_keys("ana", keys["sw1"][1])
    swarm_hub.spawn("ana")
    return {"token": swarm_hub.token("ana"), "url": swarm_hub.server_url("ana")}


def test_server_is_a_service_with_one_running_task(docker_client, swarm_hub, ana):
    service = service_of(docker_client, "ana")
    assert service is not None
    tasks = service.tasks()
    assert [t["Status"]["State"] for t in tasks] == ["running"], tasks
    spec = service.attrs["Spec"]["TaskTemplate"]
    # By ID (image_by_id): the node's Swarm agent uses its copy and asks no registry.
    assert spec["ContainerSpec"]["Image"] == docker_client.images.get("devdock/desktop:latest").id
    assert spec["RestartPolicy"]["Condition"] == "none"
    assert spec["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert spec["Resources"]["Limits"]["Pids"] == 4096
    assert {"Type": "tmpfs", "Target": "/dev/shm"}.items() <= spec["ContainerSpec"]["Mounts"][-1].items()
    # The hub recorded where it runs.
    state = swarm_hub.server_state("ana")
    assert state["swarm_node"] == tasks[0]["NodeID"]


def test_jupyterlab_desktop_and_terminal_through_the_proxy(ana):
    r = requests.get(ana["url"] + "api/status", headers={"Authorization": f"token {ana['token']}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert_desktop_answers(ana["url"], ana["token"])
    output = run_in_terminal(ana["url"], ana["token"], 'echo "user=$(whoami)"', expect="user=ana\r")
    assert "user=ana" in [line.strip() for line in output.splitlines()], output


def test_routes_need_the_hubs_auth(swarm_hub, ana):
    r = requests.get(ana["url"] + "api/status", timeout=30, allow_redirects=False)
    assert r.status_code in (302, 403), r.status_code
    bob = swarm_hub.token("bob-sw")
    r = requests.get(ana["url"] + "api/status", headers={"Authorization": f"token {bob}"}, timeout=30)
    assert r.status_code == 403, r.status_code


def test_ssh_port_published_on_the_node_and_reachable_with_the_users_key(docker_client, swarm_hub, ana, keys):
    state = swarm_hub.server_state("ana")
    port = state["ssh_port"]
    ports = service_of(docker_client, "ana").attrs["Endpoint"]["Ports"]
    assert [(p["TargetPort"], p["PublishedPort"], p["PublishMode"]) for p in ports] == [(22, port, "host")]
    host = state["swarm_ssh_host"]  # the node's address, as users are told
    result = ssh(port, "ana", keys["sw1"][0], "whoami", host=host)
    assert result.returncode == 0 and result.stdout.strip() == "ana", result.stderr
    assert ssh(port, "ana", keys["sw2"][0], host=host).returncode != 0  # another key is refused
    page = swarm_hub.browser_session("ana").get(f"{swarm_hub.url}/hub/ssh", timeout=30).text
    assert f"ssh -p {port} ana@{host}" in page


def test_port_allocator_counts_every_services_published_port(docker_client, swarm_hub, cluster):
    """A foreign service holds the port a new user would get first: devdock hands out the next one."""
    low, high = (int(p) for p in swarm_hub.env["DEVDOCK_SSH_PORTS"].split("-"))
    wanted = PortAllocator(low, high).home_port(server_key("cleo", ""))
    ports = [{"Protocol": "tcp", "TargetPort": 9, "PublishedPort": wanted, "PublishMode": "host"}]
    foreign = idle_service(docker_client, "foreign", endpoint_spec={"Mode": "dnsrr", "Ports": ports})
    try:
        swarm_hub.spawn("cleo")
        port = swarm_hub.server_state("cleo")["ssh_port"]
        assert port != wanted and low <= port <= high
    finally:
        foreign.remove()
        swarm_hub.stop_server("cleo")


def test_hub_restart_finds_every_service(docker_client, swarm_hub, ana, keys):
    before = swarm_hub.server_state("ana")
    service_id = service_of(docker_client, "ana").id
    swarm_hub.restart()
    assert swarm_hub.user_model("ana")["servers"][""]["ready"]
    assert service_of(docker_client, "ana").id == service_id
    r = requests.get(ana["url"] + "api/status", headers={"Authorization": f"token {ana['token']}"}, timeout=30)
    assert r.status_code == 200
    assert swarm_hub.server_state("ana")["ssh_port"] == before["ssh_port"]


def test_a_running_service_the_database_does_not_know_is_kept_and_an_ended_one_is_removed(docker_client, swarm_hub):
    """Reconciliation on Swarm, as on one engine: a service of this hub that no server of its database owns is left
    running (a new or restored database must not take anyone's server away); one whose task has ended (a spawn cut
    short by a crash) is removed."""
    hub_id = swarm_hub.env["DEVDOCK_HUB_ID"]
    running = idle_service(docker_client, "unknown", {"io.devdock.hub": hub_id, "io.devdock.owner": "ghost"})
    ended = docker_client.services.create(
        docker_client.images.get(SWARM_IMAGE).id, ["true"], name=f"ended-{RUN_ID}",
        labels={RUN_LABEL: RUN_ID, "io.devdock.hub": hub_id, "io.devdock.owner": "crashed"},
        restart_policy=docker.types.RestartPolicy(condition="none"),
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        states = [t["Status"]["State"] for t in ended.tasks()]
        if states and "running" not in states and all(s in ("complete", "failed", "shutdown") for s in states):
            break
        time.sleep(1)
    try:
        swarm_hub.restart()  # reconciliation runs once per hub process
        swarm_hub.spawn("dora")
        ids = [s.id for s in docker_client.services.list()]
        assert ended.id not in ids
        assert running.id in ids  # positive control: the same step kept the running one
        assert "runs but this hub's database does not know it" in swarm_hub.log_tail(400)
        swarm_hub.stop_server("dora")
    finally:
        running.remove()
        if ended.id in [s.id for s in docker_client.services.list()]:
            ended.remove()


def test_stop_removes_the_service_and_keeps_the_home(docker_client, swarm_hub, ana):
    run_in_terminal(ana["url"], ana["token"], "echo kept > ~/proof.txt && echo wr''ote", expect="wrote\r")
    swarm_hub.stop_server("ana")
    assert service_of(docker_client, "ana") is None
    swarm_hub.spawn("ana")
    output = run_in_terminal(ana["url"], ana["token"], "cat ~/proof.txt", expect="kept\r")
    assert "kept" in output


@pytest.mark.parametrize(
    ("profile", "status", "words"),
    [
        ("every-gpu", 500, "which Swarm cannot reserve"),
        ("no-image", 503, "is not on the hub's engine, so its ID is unknown"),
    ],
)
def test_what_swarm_cannot_do_is_said_clearly_and_leaves_nothing(docker_client, swarm_hub, profile, status, words):
    swarm_hub.create_user("fay")
    r = swarm_hub.api("POST", "/users/fay/server", json={"profile": profile})
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    assert service_of(docker_client, "fay") is None


def test_servers_on_the_overlay_reach_the_hub_api_but_not_the_proxy_api(docker_client, swarm_hub, cluster, ana):
    """The proxy's API (it changes every route) listens off the users' overlay network; the hub API is on it."""
    task_container = docker_client.containers.list(filters={"label": ["io.devdock.owner=ana"]})[0]

    def reach(ip: str, port: int) -> bool:
        script = f"timeout 3 bash -c '</dev/tcp/{ip}/{port}' 2>/dev/null && echo open || echo closed"
        result = task_container.exec_run(["bash", "-c", script], user="1000")
        answer = result.output.decode().strip()
        assert result.exit_code == 0 and answer in ("open", "closed"), (result.exit_code, answer)
        return answer == "open"

    hub_port = int(swarm_hub.env["DEVDOCK_HUB_PORT"])
    assert reach(cluster.hub_overlay_address, hub_port)  # positive control: what jupyterhub-singleuser needs
    assert not reach(cluster.hub_overlay_address, swarm_hub.proxy_api_port)
    assert not reach(cluster.hub_address, swarm_hub.proxy_api_port)

"""Both spawners' error paths while a server starts, against one scripted Docker API (tests/unit/fake_docker.py).

The engine's words decide what happens next: an SSH port that something outside devdock holds is mended with
another port (the base spawner's ``recreate_with_new_ssh_port`` hook, which the Swarm spawner uses as it is), a
task Swarm's constraint enforcer dropped is made again (``recreate_object``), anything else is the user's error
page. The real engine's versions of these paths are in tests/integration/test_ssh.py and tests/swarm/.
"""

from __future__ import annotations

import pytest
from docker.errors import APIError
from tornado import web

from devdock_spawner import DevDockSpawner, DevDockSwarmSpawner
from devdock_spawner.swarm import ENFORCER_REJECTED
from tests.unit import fake_docker
from tests.unit.fake_docker import api_error, in_turn

PORT_ALLOCATED = (
    "driver failed programming external connectivity: Bind for 0.0.0.0:42001 failed: port is already allocated"
)
NODE = {"Description": {"Hostname": "node-1"}, "Status": {"Addr": "10.0.0.1"}, "Spec": {}}


def swarm_task(state: str, err: str = "") -> list[dict]:
    return [
        {"ID": "t", "NodeID": "n1", "CreatedAt": "1", "DesiredState": "running", "Status": {"State": state, "Err": err}}
    ]


def engine(kind: str, first_answer):
    """A spawner of ``kind`` whose engine answers its first start with ``first_answer``, then starts it."""
    if kind == "docker":
        spawner = fake_docker.make(DevDockSpawner, start=in_turn(first_answer, None))
    else:
        spawner = fake_docker.make(
            DevDockSwarmSpawner, tasks=in_turn(first_answer, swarm_task("running")), inspect_node=NODE
        )
    spawner.ssh_port = 42001
    spawner.recreated = []

    async def recreate_object():
        spawner.recreated.append("object")

    async def recreate_with_new_ssh_port(problem):
        spawner.recreated.append(("new-ssh-port", problem))
        spawner.ssh_port = 42002

    spawner.recreate_object = recreate_object
    spawner.recreate_with_new_ssh_port = recreate_with_new_ssh_port
    return spawner


# (id, spawner, the engine's first answer, what the spawner does about it)
MENDED = [
    ("docker-ssh-port-taken", "docker", api_error(500, PORT_ALLOCATED), [("new-ssh-port", PORT_ALLOCATED)]),
    (
        "swarm-ssh-port-taken",
        "swarm",
        swarm_task("rejected", "listen tcp 0.0.0.0:42001: bind: address already in use"),
        [("new-ssh-port", "listen tcp 0.0.0.0:42001: bind: address already in use")],
    ),
    ("swarm-enforcer-dropped-the-task", "swarm", swarm_task("rejected", ENFORCER_REJECTED), ["object"]),
    ("swarm-still-starting", "swarm", swarm_task("preparing"), []),
]


@pytest.mark.parametrize(("kind", "first", "expected"), [c[1:] for c in MENDED], ids=[c[0] for c in MENDED])
async def test_start_errors_that_can_be_mended_are_mended_by_the_same_hooks(kind, first, expected):
    spawner = engine(kind, first)
    await spawner.start_object()
    assert spawner.recreated == expected
    if expected and expected[0] != "object":
        assert spawner.ssh_port == 42002


async def test_start_errors_that_cannot_be_mended_reach_the_user_and_nothing_is_recreated():
    other = fake_docker.make(DevDockSpawner, start=api_error(500, "OCI runtime create failed: no such file"))
    other.ssh_port = 42001
    with pytest.raises(APIError):
        await other.start_object()
    no_runtime = fake_docker.make(
        DevDockSpawner, start=api_error(500, 'could not select device driver "" with capabilities: [[gpu]]')
    )
    with pytest.raises(web.HTTPError) as refused:
        await no_runtime.start_object()
    assert refused.value.status_code == 503 and "NVIDIA" in refused.value.log_message
    # A port clash without SSH is not devdock's to mend either (the port is not its).
    no_ssh = engine("docker", api_error(500, PORT_ALLOCATED))
    no_ssh.ssh_enabled = False
    with pytest.raises(APIError):
        await no_ssh.start_object()
    assert no_ssh.recreated == []
    # Control: the same spawner with SSH on mends the same clash.
    with_ssh = engine("docker", api_error(500, PORT_ALLOCATED))
    await with_ssh.start_object()
    assert with_ssh.recreated == [("new-ssh-port", PORT_ALLOCATED)]


async def test_a_port_clash_that_keeps_coming_back_is_given_up_after_three_tries_on_both_engines():
    clash = api_error(500, PORT_ALLOCATED)
    docker_spawner = fake_docker.make(DevDockSpawner, start=clash)
    docker_spawner.ssh_port, tries = 42001, []

    async def recreate(problem):
        tries.append(problem)

    docker_spawner.recreate_with_new_ssh_port = recreate
    with pytest.raises(APIError):
        await docker_spawner.start_object()
    assert len(tries) == 2  # three starts: the first, and two with new ports
    swarm_spawner = fake_docker.make(
        DevDockSwarmSpawner, tasks=swarm_task("rejected", "bind: address already in use"), inspect_node=NODE
    )
    swarm_spawner.ssh_port, swarm_tries = 42001, []

    async def recreate_swarm(problem):
        swarm_tries.append(problem)

    async def exit_report():
        return "Swarm could not start the server (rejected: bind: address already in use)."

    swarm_spawner.recreate_with_new_ssh_port = recreate_swarm
    swarm_spawner._exit_report = exit_report
    with pytest.raises(web.HTTPError) as failed:
        await swarm_spawner.start_object()
    assert len(swarm_tries) == 3 and "address already in use" in failed.value.log_message

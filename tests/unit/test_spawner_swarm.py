"""DevDockSwarmSpawner's decisions on what Swarm reports (a scripted Docker API; the real one is in tests/swarm)."""

from __future__ import annotations

import pytest
from docker.errors import APIError
from tornado import web
from traitlets.config import Config

from devdock_spawner import DevDockSwarmSpawner
from devdock_spawner.profiles import Profile
from tests.unit import fake_docker
from tests.unit.fake_docker import api_error


def make(config=None, **answers) -> DevDockSwarmSpawner:
    return fake_docker.make(DevDockSwarmSpawner, config, **answers)


def task(state="running", desired="running", node="n1", gpus=()):
    return {
        "ID": "t1", "ServiceID": "", "NodeID": node, "CreatedAt": "2026", "DesiredState": desired,
        "Status": {"State": state, "Err": "boom" if state == "failed" else ""},
        "GenericResources": [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": g}} for g in gpus],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ([task()], None),
        ([task("starting")], None),
        ([task("failed")], "task failed: boom"),
        ([], 0),
        ([task(desired="shutdown")], "task running, Swarm wants it shutdown: "),
    ],
    ids=["running", "starting", "failed", "gone", "being-shut-down"],
)
async def test_poll_reads_the_newest_task(tasks, expected):
    assert await make(tasks=tasks)._poll_object() == expected


async def test_a_manager_that_cannot_answer_keeps_the_server():
    """A leader election answers 503: the hub must not forget (and later reap) a running server."""
    assert await make(tasks=api_error(503))._poll_object() is None
    with pytest.raises(APIError):
        await make(tasks=api_error(400))._poll_object()


def gpu_node(node_id, *ids, availability="active"):
    return {
        "ID": node_id,
        "Description": {
            "Hostname": f"host-{node_id}",
            "Resources": {"GenericResources": [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": i}} for i in ids]},
        },
        "Spec": {"Availability": availability, "Labels": {}},
        "Status": {"State": "ready", "Addr": "192.0.2.1"},
    }


GPU2 = Profile(slug="gpu2", display_name="2 GPUs", gpus=2)


async def test_gpus_must_be_free_on_one_node():
    nodes = [gpu_node("n1", "A", "B"), gpu_node("n2", "C", "D")]
    busy = [task(node="n1", gpus=["A"]), task(node="n2", gpus=["C"])]
    spawner = make(nodes=nodes, tasks=busy)
    with pytest.raises(web.HTTPError) as e:
        await spawner.allocate_gpus(GPU2)
    assert e.value.status_code == 409
    assert "needs 2 on one node, and the most free on any node is 1 (2 of 4 free" in e.value.log_message
    assert await make(nodes=nodes, tasks=busy[:1]).allocate_gpus(GPU2) == []  # n2 has two free


async def test_a_home_on_a_node_without_gpus_is_said_at_once():
    spawner = make(nodes=[gpu_node("cpu"), gpu_node("n2", "C", "D")], tasks=[], inspect_node=gpu_node("cpu"))
    spawner.swarm_node, spawner.swarm_node_name = "cpu", "host-cpu"
    with pytest.raises(web.HTTPError) as e:
        await spawner.allocate_gpus(GPU2)
    assert e.value.status_code == 409
    assert e.value.log_message.startswith("Your home is on node host-cpu, which has 0 GPUs")


async def test_a_home_on_a_drained_node_refuses_and_a_removed_node_unpins():
    drained = make(inspect_node=gpu_node("n1", availability="drain"))
    drained.swarm_node, drained.swarm_node_name = "n1", "host-n1"
    with pytest.raises(web.HTTPError) as e:
        await drained._check_home_node()
    assert e.value.status_code == 503 and "which is drained now" in e.value.log_message
    removed = make(inspect_node=api_error(404))
    removed.swarm_node = "gone"
    assert await removed._check_home_node() is None
    assert removed.swarm_node == ""


async def test_a_home_made_before_the_move_to_swarm_is_pinned_to_the_hubs_node():
    spawner = make(inspect_volume={"Name": "devdock-home-ana"}, info={"Swarm": {"NodeID": "mgr"}, "Name": "box1"})
    spawner.docker.answers["inspect_node"] = gpu_node("mgr")
    assert await spawner._check_home_node() == "mgr"
    assert (spawner.swarm_node, spawner.swarm_node_name) == ("mgr", "box1")
    fresh = make(inspect_volume=api_error(404))
    assert await fresh._check_home_node() is None and fresh.swarm_node == ""


async def test_loopback_ssh_bind_is_refused_before_anything_is_created():
    spawner = make(Config({"DevDockSpawner": {"ssh_bind_address": "127.0.0.1"}}))
    with pytest.raises(web.HTTPError) as e:
        await spawner.start()
    assert e.value.status_code == 500 and "cannot be honoured on Swarm" in e.value.log_message
    assert spawner.docker.calls == []


@pytest.mark.parametrize(("encrypted", "options"), [(False, {}), (True, {"encrypted": "true"})])
async def test_the_users_network_is_an_attachable_overlay(encrypted, options):
    created = []
    spawner = make(
        Config({"DevDockSwarmSpawner": {"network_encrypted": encrypted, "network_keeper": False}}),
        inspect_network=api_error(404),
        create_network=lambda name, **kwargs: created.append((name, kwargs)),
    )
    await spawner.ensure_network()
    ((name, kwargs),) = created
    assert name == "devdock" and kwargs["driver"] == "overlay" and kwargs["attachable"] is True
    assert kwargs["options"] == options


async def test_a_bridge_network_of_the_same_name_is_refused_with_a_sentence():
    spawner = make(Config({"DevDockSwarmSpawner": {"network_keeper": False}}),
                   inspect_network={"Scope": "local", "Driver": "bridge"})  # fmt: skip
    with pytest.raises(web.HTTPError) as e:
        await spawner.ensure_network()
    assert "is a bridge network; devdock on Swarm needs an overlay network" in e.value.log_message


def test_the_swarm_spawner_overrides_only_the_seams_its_docstring_lists():
    """The Swarm spawner changes the Docker object and nothing else: every name it overrides of DevDockSpawner's
    (attributes, methods, trait defaults) is one its module's docstring lists for authors of another variant."""
    import re

    from devdock_spawner import DevDockSpawner, spawner_swarm

    traitlets_own = {"_trait_default_generators", "_all_trait_default_generators", "_traits", "_descriptors",
                     "_static_immutable_initial_values", "_instance_inits"}  # fmt: skip
    own = [n for n in vars(DevDockSwarmSpawner) if not n.startswith("__") and n not in traitlets_own]
    overrides = {n for n in own if hasattr(DevDockSpawner, n)}
    overrides |= {
        n for n in own if n.startswith("_default_") and n.removeprefix("_default_") in DevDockSpawner.class_traits()
    }
    seams = spawner_swarm.__doc__.split("**The seams this class overrides**")[1]
    listed = set(re.findall(r"``(\w+)``", seams))
    assert overrides == listed
    assert len(overrides) <= 15

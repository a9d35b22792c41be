"""The hub-wide object (devdock_spawner.hubwide): one per hub, started once, stopped with the hub, without a hub.

Against the scripted Docker API (tests/unit/fake_docker.py); the real engine is in the integration tier.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets.config import Config

from devdock_spawner import DevDockSpawner, DevDockSwarmSpawner, hubwide
from devdock_spawner.hubwide_swarm import SwarmHub
from devdock_spawner.profiles import Profile
from tests.unit import fake_docker
from tests.unit.test_spawner_swarm import gpu_node


def container(name: str, user: str, state: str = "running", gpus: str = "") -> dict:
    labels = {"io.devdock.owner": user, "io.devdock.server": "", "io.devdock.hub": "devdock"}
    if gpus:
        labels["io.devdock.gpus"] = gpus
    return {"Id": f"id-{name}", "Names": [f"/{name}"], "State": state, "Labels": labels}


def test_one_hub_object_per_hub_shared_by_all_its_servers_and_another_for_another_hub():
    config = Config()
    ana = DevDockSpawner(user=_user("ana"), orm_spawner=_orm(), config=config)
    bo = DevDockSpawner(user=_user("bo"), orm_spawner=_orm(), config=config)
    assert ana.devdock_hub is bo.devdock_hub
    assert ana.executor is bo.executor  # one thread pool for every server's Docker calls
    assert hubwide.current() is ana.devdock_hub
    other = DevDockSpawner(user=_user("ana"), orm_spawner=_orm(), config=Config())
    assert other.devdock_hub is not ana.devdock_hub  # another hub (another configuration) has its own


def test_the_hub_object_reads_hub_wide_settings_once_and_profiles_do_not_change_them():
    config = Config({"DevDockSpawner": {"hub_id": "lab", "usage_interval": 7}})
    spawner = DevDockSpawner(user=_user("ana"), orm_spawner=_orm(), config=config)
    hub = spawner.devdock_hub
    assert (hub.settings.hub_id, hub.settings.usage_interval, hub.settings.image) == (
        "lab", 7, "devdock/desktop:latest",
    )  # fmt: skip
    spawner.image = "example/other:1"  # what a profile's override does, on one server
    assert spawner.devdock_hub.settings.image == "devdock/desktop:latest"


async def test_start_reconciles_once_however_many_servers_ask():
    spawner = fake_docker.make(DevDockSpawner, containers=[container("devdock-zed", "zed", state="exited")],
                               remove_container=None)  # fmt: skip
    hub = spawner.devdock_hub
    hub.db = _Db(running=[])  # the database lists no running server
    watching = []
    hub._start_watching = lambda: watching.append(True)  # the watchers read the real engine: not here
    await asyncio.gather(hub.start(), hub.start(), hub.start())
    assert spawner.docker.calls == ["containers", "remove_container"]  # the exited orphan, removed once
    await hub.start()
    assert spawner.docker.calls == ["containers", "remove_container"]
    assert watching == [True]  # and the watchers were started once


async def test_a_running_container_the_database_does_not_know_is_kept_and_listed():
    spawner = fake_docker.make(DevDockSpawner, containers=[container("devdock-ivy", "ivy", gpus="GPU-1")])
    hub = spawner.devdock_hub
    hub.db = _Db(running=[])
    hub._start_watching = lambda: None
    await hub.start()
    assert [(f.name, f.gpus) for f in hub.unknown_servers] == [("devdock-ivy", ("GPU-1",))]
    assert "remove_container" not in spawner.docker.calls


def test_stop_lets_the_docker_threads_go():
    spawner = fake_docker.make(DevDockSpawner)
    hub = spawner.devdock_hub
    assert hub.executor.submit(lambda: 41 + 1).result() == 42  # positive control: the pool runs work
    hub.stop()
    with pytest.raises(RuntimeError):
        hub.executor.submit(lambda: 0)


def test_the_swarm_spawner_gets_the_swarm_hub_object():
    spawner = fake_docker.make(DevDockSwarmSpawner)
    assert isinstance(spawner.devdock_hub, SwarmHub)
    assert spawner.devdock_hub.object_type == spawner.object_type == "service"
    assert not isinstance(fake_docker.make(DevDockSpawner).devdock_hub, SwarmHub)


def swarm_task(user: str, server: str, node: str, *gpus: str) -> dict:
    labels = {"io.devdock.owner": user, "io.devdock.server": server}
    return {
        "ID": f"t-{user}-{server}", "NodeID": node, "DesiredState": "running", "Status": {"State": "running"},
        "Spec": {"ContainerSpec": {"Labels": labels}},
        "GenericResources": [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": g}} for g in gpus],
    }  # fmt: skip


GPU1 = Profile(slug="gpu", display_name="1 GPU", gpus=1)


async def test_swarm_applies_gpu_max_per_user_across_a_persons_servers():
    nodes = [gpu_node("n1", "A", "B", "C")]
    tasks = [swarm_task("ana", "", "n1", "A")]  # ana's default server holds one GPU; two are free
    capped = fake_docker.make(DevDockSwarmSpawner, Config({"DevDockSpawner": {"gpu_max_per_user": 1}}),
                              server="second", nodes=nodes, tasks=tasks)  # fmt: skip
    with pytest.raises(web.HTTPError) as e:
        await capped.allocate_gpus(GPU1)
    assert e.value.status_code == 409
    assert "You already hold 1 GPU in your other servers, and this profile asks for 1: at most 1 per person" in (
        e.value.log_message
    )
    # Positive controls: another person may take a free GPU under the same cap, and so may ana with a cap of 2.
    other = fake_docker.make(DevDockSwarmSpawner, Config({"DevDockSpawner": {"gpu_max_per_user": 1}}),
                             username="bo", nodes=nodes, tasks=tasks)  # fmt: skip
    assert await other.allocate_gpus(GPU1) == []
    roomy = fake_docker.make(DevDockSwarmSpawner, Config({"DevDockSpawner": {"gpu_max_per_user": 2}}),
                             server="second", nodes=nodes, tasks=tasks)  # fmt: skip
    assert await roomy.allocate_gpus(GPU1) == []


def _user(name: str):
    return SimpleNamespace(name=name, url=f"/user/{name}/", id=1, escaped_name=name)


def _orm():
    return SimpleNamespace(name="", state=None, server=None, user=None, id=1)


class _Db:
    """Just enough of the hub database for ``running_server_keys``: the spawners it lists as running."""

    def __init__(self, running: list):
        self.running = running

    def query(self, _model):
        return self

    def filter(self, *_args):
        return self.running

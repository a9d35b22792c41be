"""The hub-wide object (devdock_spawner.hubwide): one per hub, started once, stopped with the hub, without a hub.

Against the scripted Docker API (tests/unit/fake_docker.py); the real engine is in the integration tier.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from docker.errors import ImageNotFound
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


# --- the resident home helper (homes with a size limit) ---------------------------------------------------------


def _helper_answers(**answers):
    base = {
        "inspect_image": {"Id": "sha256:new"},
        "inspect_container": fake_docker.api_error(404),
        "create_container": {"Id": "helper-1"},
        "start": None,
        "exec_create": {"Id": "exec-1"},
        "exec_start": (b'{"device": "/dev/loop7", "created": true, "size": 1}\n', b""),
        "exec_inspect": {"ExitCode": 0},
    }
    return {**base, **answers}


async def test_home_steps_run_in_one_resident_helper_made_once():
    spawner = fake_docker.make(DevDockSpawner, **_helper_answers())
    hub = spawner.devdock_hub
    first = await hub.home_image_step("devdock/hub:latest", "/var/lib/devdock/homes", ["attach", "x"], "failed")
    second = await hub.home_image_step("devdock/hub:latest", "/var/lib/devdock/homes", ["release", "x"], "failed")
    assert first["device"] == second["device"] == "/dev/loop7"
    assert spawner.docker.calls == [
        "inspect_image", "inspect_container", "create_container", "start",
        "exec_create", "exec_start", "exec_inspect", "exec_create", "exec_start", "exec_inspect",
    ]  # fmt: skip


async def test_a_running_home_helper_of_the_same_image_is_used_and_an_older_one_replaced():
    same = {"Id": "helper-0", "Image": "sha256:new", "State": {"Running": True}}
    spawner = fake_docker.make(DevDockSpawner, **_helper_answers(inspect_container=same))
    await spawner.devdock_hub.home_image_step("devdock/hub:latest", "/h", ["attach", "x"], "failed")
    assert "create_container" not in spawner.docker.calls
    older = {"Id": "helper-0", "Image": "sha256:old", "State": {"Running": True}}
    spawner = fake_docker.make(DevDockSpawner, **_helper_answers(inspect_container=older, remove_container=None))
    await spawner.devdock_hub.home_image_step("devdock/hub:latest", "/h", ["attach", "x"], "failed")
    assert spawner.docker.calls[:4] == ["inspect_image", "inspect_container", "remove_container", "create_container"]


async def test_a_home_helper_that_vanished_is_made_again_and_the_step_still_runs():
    gone = fake_docker.in_turn(fake_docker.api_error(409, "container is not running"), {"Id": "exec-2"})
    spawner = fake_docker.make(DevDockSpawner, **_helper_answers(exec_create=gone))
    out = await spawner.devdock_hub.home_image_step("devdock/hub:latest", "/h", ["attach", "x"], "failed")
    assert out["created"] is True
    assert spawner.docker.calls.count("create_container") == 2


async def test_a_failed_home_step_is_a_500_with_the_helpers_words_and_a_missing_image_a_503_naming_it():
    failing = fake_docker.make(DevDockSpawner, **_helper_answers(exec_start=(b"", b"losetup: no free device\n"),
                                                                 exec_inspect={"ExitCode": 1}))  # fmt: skip
    with pytest.raises(web.HTTPError) as e:
        await failing.devdock_hub.home_image_step("devdock/hub:latest", "/h", ["attach", "x"], "The home failed")
    assert e.value.status_code == 500 and e.value.log_message == "The home failed: losetup: no free device"
    missing = fake_docker.make(DevDockSpawner, **_helper_answers(inspect_image=ImageNotFound("No such image")))
    with pytest.raises(web.HTTPError) as e:
        await missing.devdock_hub.home_image_step("devdock/hub:latest", "/h", ["attach", "x"], "The home failed")
    assert e.value.status_code == 503
    assert "The image devdock/hub:latest is not available on this server" in e.value.log_message
    assert "create_container" not in missing.docker.calls


async def test_the_home_helper_does_not_inherit_the_compose_projects_labels_of_its_image():
    """An image built by docker compose labels its project and service; the helper must not look like the project's
    hub container to compose (or to anyone listing the project's containers)."""
    made = []
    image = {
        "Id": "sha256:new",
        "Config": {
            "Labels": {
                "com.docker.compose.project": "devdock",
                "com.docker.compose.service": "hub",
                "io.devdock.image": "hub",
            }
        },
    }
    spawner = fake_docker.make(
        DevDockSpawner,
        **_helper_answers(
            inspect_image=image, create_container=lambda *a, **kw: made.append(kw["labels"]) or {"Id": "helper-1"}
        ),
    )
    await spawner.devdock_hub.home_image_step("devdock/hub:latest", "/h", ["attach", "x"], "failed")
    (labels,) = made
    assert labels["com.docker.compose.project"] == labels["com.docker.compose.service"] == ""
    assert labels["io.devdock.role"] == "home-helper" and "io.devdock.image" not in labels

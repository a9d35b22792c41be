"""DevDockSpawner's defaults and derived names, without an engine (pure logic)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from traitlets.config import Config

from devdock_spawner import DevDockSpawner


def make_spawner(username="alice", server="", config=None) -> DevDockSpawner:
    user = SimpleNamespace(name=username, url=f"/user/{username}/", id=1, escaped_name=username)
    orm_spawner = SimpleNamespace(name=server, state=None, server=None, user=None, id=1)
    return DevDockSpawner(user=user, orm_spawner=orm_spawner, config=config or Config())


def test_registered_as_devdock_entry_point():
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="jupyterhub.spawners") if ep.name == "devdock"]
    assert ep.load() is DevDockSpawner


BOB = "bob-smith--274c9d19d98772457ec3e83af4fc9309"  # 128 bits of SHA-256("Bob.Smith")
BOB_LOGIN = "bob-smith--274c9d19d98772457ec3"  # 80 bits: login names have at most 32 characters
NAMES = [
    ("default-server", "alice", "", "devdock-alice", "devdock-home-alice", "/home/alice"),
    ("named-server", "alice", "gpu", "devdock-alice_gpu", "devdock-home-alice_gpu", "/home/alice"),
    ("escaped-user", "Bob.Smith", "", f"devdock-{BOB}", f"devdock-home-{BOB}", f"/home/{BOB_LOGIN}"),
]


@pytest.mark.parametrize(
    ("username", "server", "container", "volume", "home"), [n[1:] for n in NAMES], ids=[n[0] for n in NAMES]
)
def test_container_and_home_volume_names(username, server, container, volume, home):
    spawner = make_spawner(username, server)
    assert spawner.object_name == container
    binds = spawner.volume_binds
    assert list(binds) == [volume]
    assert binds[volume]["bind"] == home


def test_defaults_need_no_configuration():
    spawner = make_spawner()
    assert spawner.image == "devdock/desktop:latest"
    assert spawner.remove is True
    assert spawner.use_internal_ip is True
    assert spawner.network_name == "devdock"
    assert spawner.default_url == "/lab"


def test_site_configuration_wins_over_defaults():
    c = Config()
    c.DevDockSpawner.image = "example.org/lab/desktop:2"
    c.DevDockSpawner.volumes = {"/srv/data": {"bind": "/data", "mode": "ro"}}
    spawner = make_spawner(config=c)
    assert spawner.image == "example.org/lab/desktop:2"
    assert spawner.volume_binds == {"/srv/data": {"bind": "/data", "mode": "ro"}}


def test_labels_carry_owner_server_and_extra_labels():
    c = Config()
    c.DevDockSpawner.extra_labels = {"com.example.team": "vision"}
    labels = make_spawner("alice", "gpu", config=c)._labels()
    assert labels["io.devdock.owner"] == "alice"
    assert labels["io.devdock.server"] == "gpu"
    assert labels["com.example.team"] == "vision"


def test_reference_docs_are_generated_from_current_help():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(root / "docs/generate_reference.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_profile_overrides_never_leak_into_the_next_spawn():
    from devdock_spawner.profiles import load_profiles

    c = Config()
    c.DevDockSpawner.environment = {"SITE": "1"}
    spawner = make_spawner(config=c)
    site_mem_limit = spawner.mem_limit
    gpu, cpu = load_profiles(
        [
            {
                "slug": "gpu",
                "overrides": {"image": "devdock/desktop-cuda:1", "mem_limit": "8G", "environment": {"X": "1"}},
            },
            {"slug": "cpu"},
        ]
    )
    spawner._apply_profile(gpu)
    assert spawner.image == "devdock/desktop-cuda:1"
    assert spawner.mem_limit == 8 * 1024**3
    assert spawner.environment == {"SITE": "1", "X": "1"}
    spawner._apply_profile(cpu)
    assert spawner.image == "devdock/desktop:latest"
    assert spawner.mem_limit == site_mem_limit
    assert spawner.environment == {"SITE": "1"}


@pytest.mark.parametrize(
    ("prestart", "starting", "expected"),
    [(True, 1, "1"), (True, 2, "1"), (True, 3, "0"), (False, 1, "0")],
    ids=["alone", "two-at-once", "a-class-logging-in", "switched-off"],
)
def test_desktop_starts_early_unless_switched_off_or_many_servers_start(prestart, starting, expected, monkeypatch):
    spawner = make_spawner(config=Config({"DevDockSpawner": {"desktop_prestart": prestart}}))
    monkeypatch.setattr(spawner.devdock_hub, "starting", starting)
    assert spawner._prestart_desktop() is (expected == "1")


def test_swarm_spawner_registered_as_devdock_swarm():
    from importlib.metadata import entry_points

    from devdock_spawner import DevDockSwarmSpawner

    (ep,) = [ep for ep in entry_points(group="jupyterhub.spawners") if ep.name == "devdock-swarm"]
    assert ep.load() is DevDockSwarmSpawner
    assert issubclass(DevDockSwarmSpawner, DevDockSpawner)

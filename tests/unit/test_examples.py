"""The example configurations load the way JupyterHub loads them, and their profiles and GPUs are valid."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config.loader import PyFileConfigLoader

from devdock_spawner import DevDockSpawner
from devdock_spawner.gpu import GPU, device_config
from devdock_spawner.profiles import load_profiles

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*/jupyterhub_config.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_config_loads_and_is_valid(path, monkeypatch):
    # What scripts/up.sh provides; DEVDOCK_HUB_IP keeps the config from asking Docker for the gateway.
    monkeypatch.setenv("DEVDOCK_DUMMY_PASSWORD", "example-password")
    monkeypatch.setenv("DEVDOCK_HUB_IP", "172.17.0.1")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    config = PyFileConfigLoader(path.name, str(path.parent)).load_config()
    assert config.JupyterHub.spawner_class == "devdock"
    user = SimpleNamespace(name="alice", url="/user/alice/", id=1, escaped_name="alice")
    spawner = DevDockSpawner(user=user, orm_spawner=SimpleNamespace(name="", state=None, server=None), config=config)
    profiles = load_profiles(spawner.profile_list)
    inventory = [GPU.from_config(entry) for entry in spawner.gpu_inventory]
    assert any(p.gpus for p in profiles) and inventory
    wanted = max(p.gpus for p in profiles if p.gpus != "all")
    assert device_config(inventory[:wanted], spawner.gpu_mode, spawner.gpu_common_devices, spawner.gpu_driver_dir)


def test_there_are_examples():
    assert {p.parent.name for p in EXAMPLES} >= {"gpu-host", "no-toolkit"}

"""The example configurations load the way JupyterHub loads them, and their profiles and GPUs are valid."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config.loader import PyFileConfigLoader

from devdock_spawner import DevDockSpawner
from devdock_spawner.gpu import GPU, device_config
from devdock_spawner.profiles import load_profiles

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*/site_config.py") if p.parent.name != "site-folder")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_config_loads_and_is_valid(path, monkeypatch):
    # What scripts/up.sh provides; DEVDOCK_HUB_IP keeps the config from asking Docker for the gateway. The example
    # is a site configuration, loaded the way devdock's jupyterhub_config.py loads one.
    monkeypatch.setenv("DEVDOCK_DUMMY_PASSWORD", "example-password")
    monkeypatch.setenv("DEVDOCK_HUB_IP", "172.17.0.1")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("DEVDOCK_SITE_CONFIG", str(path))
    config = PyFileConfigLoader("jupyterhub_config.py", str(ROOT)).load_config()
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


def test_the_site_folder_example_is_loaded_last(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "site_config.py").write_text((ROOT / "examples/site-folder/site_config.py").read_text())
    (site / "profiles.json").write_text((ROOT / "examples/site-folder/profiles-gpu.json").read_text())
    monkeypatch.setenv("DEVDOCK_DUMMY_PASSWORD", "example-password")
    monkeypatch.setenv("DEVDOCK_HUB_IP", "172.17.0.1")
    monkeypatch.setenv("DEVDOCK_SITE_DIR", str(site))
    config = PyFileConfigLoader("jupyterhub_config.py", str(ROOT)).load_config()
    assert config.DevDockSpawner.shm_size == "2g"  # from site_config.py
    slugs = [p["slug"] for p in config.DevDockSpawner.profile_list]
    assert slugs == [p["slug"] for p in json.loads((site / "profiles.json").read_text())["profiles"]]


@pytest.mark.parametrize("variable", ["DEVDOCK_SITE_CONFIG", "DEVDOCK_PROFILES_FILE"])
def test_a_named_site_file_that_is_missing_stops_the_hub(tmp_path, monkeypatch, variable):
    monkeypatch.setenv("DEVDOCK_DUMMY_PASSWORD", "example-password")
    monkeypatch.setenv("DEVDOCK_HUB_IP", "172.17.0.1")
    monkeypatch.setenv(variable, str(tmp_path / "not-there.py"))
    with pytest.raises(SystemExit, match=f"{variable}=.*not-there.py does not exist"):
        PyFileConfigLoader("jupyterhub_config.py", str(ROOT)).load_config()

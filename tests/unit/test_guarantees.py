"""Which of devdock's guarantees a hub configuration lacks (devdock_spawner.guarantees), from tables of configs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from traitlets.config import Config

from devdock_spawner.guarantees import Gap, log_text, missing_guarantees
from devdock_spawner.proxy import DevDockProxy
from tests.harness import ROOT

LINES = {
    "proxy": 'c.JupyterHub.proxy_class = "devdock"',
    "culler": "from devdock_spawner.hubconfig import configure_culling; configure_culling(c)  # at the end",
    "home": 'c.DevDockSpawner.home_size = "50G"',
    "cleanup": "c.JupyterHub.cleanup_servers = False",
    "gpus": "c.DevDockSpawner.gpu_max_per_user = 2",
    "pages": "from devdock_spawner import hub; hub.configure(c)",
}


def _config(**sections) -> Config:
    c = Config()
    for name, values in sections.items():
        for key, value in values.items():
            setattr(c[name], key, value)
    return c


CULLER = [{"name": "devdock-culler", "command": ["python3", "-m", "jupyterhub_idle_culler"]}]
PAGES = [(r"/ssh", object), (r"/devdock/admin", object)]
COMPLETE = {
    "JupyterHub": {"proxy_class": "devdock", "services": CULLER, "cleanup_servers": False, "extra_handlers": PAGES},
    "DevDockSpawner": {"home_size": "50G", "gpu_max_per_user": 2},
}


def _hub(drop: str = "", **changes) -> dict:
    """COMPLETE with some of its JupyterHub settings changed (or one dropped)."""
    hub = {k: v for k, v in COMPLETE["JupyterHub"].items() if k != drop}
    return {**COMPLETE, "JupyterHub": {**hub, **changes}}


def _spawner(**settings) -> dict:
    return {**COMPLETE, "DevDockSpawner": settings}


CASES = [
    ("only-spawner-class", {"JupyterHub": {"spawner_class": "devdock"}}, list(LINES)),
    ("complete", COMPLETE, []),
    ("proxy-as-class", _hub(proxy_class=DevDockProxy), []),
    ("proxy-import-path", _hub(proxy_class="devdock_spawner.proxy.DevDockProxy"), []),
    ("plain-chp", _hub(proxy_class="configurable-http-proxy"), ["proxy"]),
    ("no-culler", _hub(services=[{"name": "other"}]), ["culler"]),
    ("no-pages", _hub(extra_handlers=[]), ["pages"]),
    ("home-size-chosen-empty", _spawner(home_size="", gpu_max_per_user=2), []),
    ("home-size-unset", _spawner(gpu_max_per_user=2), ["home"]),
    ("home-size-in-dockerspawner-section", {**_spawner(gpu_max_per_user=2), "DockerSpawner": {"home_size": "9G"}}, []),
    ("gpu-cap-unset", _spawner(home_size="50G"), ["gpus"]),
    ("cleanup-unset", _hub(drop="cleanup_servers"), ["cleanup"]),
    ("cleanup-chosen", _hub(cleanup_servers=True), []),
]


@pytest.mark.parametrize(("config", "missing"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_missing_guarantees(config, missing):
    gaps = missing_guarantees(_config(**config))
    assert [g.line for g in gaps] == [LINES[m] for m in missing]
    assert all(isinstance(g, Gap) and g.guarantee for g in gaps)


def test_the_log_names_each_guarantee_with_its_line():
    text = log_text(missing_guarantees(_config(JupyterHub={"spawner_class": "devdock"})))
    assert text.startswith("devdock: this hub's configuration lacks")
    for line in LINES.values():
        assert f"add: {line}" in text


def _shipped_config(env: dict) -> Config:
    """The shipped jupyterhub_config.py as JupyterHub loads it (in a child process: it reads the environment)."""
    code = (
        "import json, sys\n"
        "from jupyterhub.app import JupyterHub\n"
        "from devdock_spawner.guarantees import missing_guarantees\n"
        "app = JupyterHub()\n"
        "app.load_config_file(sys.argv[1])\n"
        "print(json.dumps([g.line for g in missing_guarantees(app.config)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "jupyterhub_config.py")],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_devdock_s_own_hub_configuration_lacks_none_of_them():
    env = {"DEVDOCK_DUMMY_PASSWORD": "x", "DEVDOCK_HUB_IP": "127.0.0.1", "DEVDOCK_SITE_DIR": "/nonexistent"}
    assert _shipped_config(env) == "[]"
    # Positive control: the same file with its culler switched off lacks exactly that.
    assert LINES["culler"] in _shipped_config({**env, "DEVDOCK_CULL": "0"})

"""The runbook's layout, followed by the compose tier: one site folder outside the checkout, COMPOSE_FILE in its
devdock.env, a fixed project name, rotated logs."""

from __future__ import annotations

import subprocess

import requests
import yaml

from tests.compose.stack import SITE_ANNOUNCEMENT


def _hub_container(stack, docker_client):
    (hub,) = docker_client.containers.list(
        filters={"label": [f"com.docker.compose.project={stack.project}", "com.docker.compose.service=hub"]}
    )
    return hub


def test_the_site_folders_site_config_is_loaded(stack):
    # Any page the hub renders itself (sign-in goes straight to the identity provider): its 404 page.
    page = requests.get(f"{stack.url}/hub/no-such-page", timeout=30, allow_redirects=False)
    assert page.status_code == 404
    assert SITE_ANNOUNCEMENT in page.text
    assert "loading the site configuration /etc/devdock/site_config.py" in stack.logs(tail=2000)


def test_compose_file_in_the_site_env_selects_the_overrides(stack, docker_client):
    hub = _hub_container(stack, docker_client)
    assert hub.labels.get("io.devdock.test.override") == "selected-by-COMPOSE_FILE"


def test_logs_are_rotated(stack, docker_client):
    for service in ("hub", "proxy", "oidc"):
        (container,) = docker_client.containers.list(
            filters={"label": [f"com.docker.compose.project={stack.project}", f"com.docker.compose.service={service}"]}
        )
        log = container.attrs["HostConfig"]["LogConfig"]
        assert log["Type"] == "json-file" and log["Config"] == {"max-size": "10m", "max-file": "5"}, (service, log)


def test_the_project_name_is_fixed_in_the_file(stack):
    """Without -p (the tier passes its own), the project is "devdock" wherever the checkout lives."""
    result = stack.compose("config")  # with -p: the tier's own project
    assert yaml.safe_load(result.stdout)["name"] == stack.project
    plain = subprocess.run(
        [*stack.command, "--env-file", str(stack.site_dir / "devdock.env"), "config"],
        cwd="/", env=stack.env, capture_output=True, text=True,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert yaml.safe_load(plain.stdout)["name"] == "devdock"


def test_the_runbooks_database_upgrade_step_runs(stack):
    """docs/operations.md's upgrade: `docker compose run --rm hub upgrade-db` on the running stack's database."""
    result = stack.compose("run", "--rm", "hub", "upgrade-db", check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    # It loaded the site's configuration, upgraded (or found current) the database and ended, as a hub never would.
    assert "loading the site configuration" in output and "Traceback" not in output, output[-3000:]
    assert "JupyterHub is now running" not in output
    assert requests.get(f"{stack.url}/hub/api/", timeout=10).status_code == 200  # the running hub is unharmed

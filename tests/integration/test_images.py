"""What devdock's images really hold: package versions read inside the built images, against the advisories."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from packaging.version import Version

from tests.advisories import ADVISORIES, IMAGE_ADVISORIES, SELKIES_ADVISORIES
from tests.harness import IMAGE, ROOT, RUN_ID


def _installed(client, image: str, *pip: str) -> dict[str, Version]:
    out = client.containers.run(
        image, [*pip, "list", "--format", "json"], entrypoint=[], remove=True, network_mode="none"
    )
    return {p["name"].lower().replace("_", "-"): Version(p["version"]) for p in json.loads(out)}


def test_desktop_image_holds_no_package_below_an_advisory_fix(docker_client):
    installed = _installed(docker_client, IMAGE, "/opt/devdock/venv/bin/pip")
    assert "jupyterhub" in installed and "tornado" in installed  # positive control: the listing is real
    below = [(p, str(installed[p]), fixed, why) for p, why, fixed in IMAGE_ADVISORIES if installed[p] < Version(fixed)]
    assert not below, below


def test_selkies_venv_in_the_desktop_image_holds_no_package_below_an_advisory_fix(docker_client):
    # Selkies' venv has no pip of its own: the server venv's pip lists it.
    installed = _installed(
        docker_client, IMAGE, "/opt/devdock/venv/bin/pip", "--python", "/opt/devdock/selkies/bin/python"
    )
    assert installed.get("selkies") == Version("2.1.0") and "pixelflux" in installed  # the listing is Selkies' venv
    assert "jupyterhub" not in installed  # and not the server's
    below = [(p, str(installed[p]), fix, why) for p, why, fix in SELKIES_ADVISORIES if installed[p] < Version(fix)]
    assert not below, below


def test_hub_image_holds_exactly_its_lock_and_nothing_below_an_advisory_fix(docker_client):
    installed = _installed(docker_client, "devdock/hub:latest", "/opt/devdock/hub/bin/pip")
    assert "devdock-spawner" in installed
    lock = {}
    for line in (ROOT / "images/hub/requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            lock[name.lower().replace("_", "-")] = Version(pinned)
    drift = {n: (str(v), str(installed.get(n))) for n, v in lock.items() if installed.get(n) != v}
    assert not drift, drift
    below = [(p, str(installed[p]), fixed, why) for p, why, fixed in ADVISORIES if installed[p] < Version(fixed)]
    assert not below, below


def _build(tag: str, dockerfile: str) -> None:
    result = subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def uid_clash_hub(docker_client, make_hub):
    """An image whose base already has a uid-1000 account (as Ubuntu 24.04 and its CUDA images have "ubuntu")."""
    tag = f"devdock/desktop:uid1000-{RUN_ID}"
    _build(tag, f"FROM {IMAGE}\nRUN groupadd -g 1000 ubuntu && useradd -m -u 1000 -g 1000 -s /bin/sh ubuntu\n")
    profiles = [
        {"slug": "desktop", "display_name": "Desktop", "default": True},
        {"slug": "ubuntu-base", "display_name": "Ubuntu-like base", "overrides": {"image": tag}},
    ]
    hub = make_hub("uid", extra_config=f"c.DevDockSpawner.profile_list = {profiles!r}")
    yield hub
    hub.stop()
    docker_client.images.remove(tag, force=True)


def test_a_base_image_with_a_uid_1000_account_works(uid_clash_hub, docker_client):
    hub = uid_clash_hub
    hub.spawn("ulla", options={"profile": "ubuntu-base"})
    container = hub.container("ulla")
    assert container.image.tags == [f"devdock/desktop:uid1000-{RUN_ID}"]
    script = "id -un; id -u; getent passwd ubuntu || echo no-ubuntu; touch ~/x && echo ok"
    out = container.exec_run(["sh", "-c", script], user="1000").output.decode().split()
    assert out == ["ulla", "1000", "no-ubuntu", "ok"], out
    assert "uid 1000 was 'ubuntu' in the image" in container.logs().decode()
    hub.stop_server("ulla")

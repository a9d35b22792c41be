"""What devdock's images really hold: package versions read inside the built images, against the advisories."""

from __future__ import annotations

import json

import pytest
from packaging.version import Version

from tests.advisories import ADVISORIES, IMAGE_ADVISORIES
from tests.harness import IMAGE

pytestmark = pytest.mark.integration


def _installed(client, image: str, pip: str) -> dict[str, Version]:
    out = client.containers.run(
        image, [pip, "list", "--format", "json"], entrypoint=[], remove=True, network_mode="none"
    )
    return {p["name"].lower().replace("_", "-"): Version(p["version"]) for p in json.loads(out)}


def test_desktop_image_holds_no_package_below_an_advisory_fix(docker_client):
    installed = _installed(docker_client, IMAGE, "/opt/devdock/venv/bin/pip")
    assert "jupyterhub" in installed and "tornado" in installed  # positive control: the listing is real
    below = [(p, str(installed[p]), fixed, why) for p, why, fixed in IMAGE_ADVISORIES if installed[p] < Version(fixed)]
    assert not below, below


def test_hub_image_holds_no_package_below_an_advisory_fix(docker_client):
    installed = _installed(docker_client, "devdock/hub:latest", "/opt/devdock/hub/bin/pip")
    assert "devdock-spawner" in installed
    below = [(p, str(installed[p]), fixed, why) for p, why, fixed in ADVISORIES if installed[p] < Version(fixed)]
    assert not below, below

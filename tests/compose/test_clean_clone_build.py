"""`docker compose build` from a clean clone: nothing copied into images/certs/ by hand.

On a network that inspects TLS (these machines' is one), pip and npm inside a build fail with "certificate verify
failed" unless the host's CA certificates are trusted there. The compose file hands the host's CA folder to every
build as the named context ``host-ca`` (DEVDOCK_HOST_CA_DIR, default /usr/local/share/ca-certificates); this test
builds the proxy image (npm over TLS) from the repository's tracked files only, as a fresh clone has them, and finds
the host's certificates installed in it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compose.stack import compose_command
from tests.harness import ROOT, RUN_ID

HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


def clean_clone(dest: Path) -> Path:
    """The tracked files of this checkout (its working copy, uncommitted edits included), nothing ignored by git:
    what `git clone` gives, without the extra CA certificates scripts/build-images.sh used to copy."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture
def clone(tmp_path):
    return clean_clone(tmp_path / "devdock")


def test_compose_builds_the_proxy_image_from_a_clean_clone_with_the_host_s_ca_certificates(clone, docker_client):
    assert not list((clone / "images" / "certs").glob("*.crt")), "the clone carries copied certificates"
    # The names the build's CA step gives them: their path below the folder, "/" as "_", after "host-ca_".
    found = HOST_CA_DIR.rglob("*.crt") if HOST_CA_DIR.is_dir() else []
    host_certs = sorted("host-ca_" + str(p.relative_to(HOST_CA_DIR)).replace("/", "_") for p in found)
    chp = json.loads((clone / "images/proxy/package.json").read_text())["dependencies"]["configurable-http-proxy"]
    tag = f"devdock-ci-{RUN_ID}/proxy:clean-clone"
    empty_env = clone / "empty.env"
    empty_env.write_text("")
    command = [*compose_command(), "-p", f"devdock-clean-{RUN_ID}", "--env-file", str(empty_env), "build", "proxy"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DEVDOCK_PROXY_IMAGE": tag, "HOME": str(clone.parent)}
    try:
        result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"compose build failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        # The build's CA step installed the host's certificates (under host-ca_<path>), and the proxy runs.
        look = "ls /usr/local/share/ca-certificates/devdock/; configurable-http-proxy --version"
        out = docker_client.containers.run(tag, entrypoint=["sh", "-c", look], remove=True, network_mode="none")
        out = out.decode()
        assert sorted(line for line in out.split() if line.startswith("host-ca_")) == host_certs, out
        assert chp in out.split(), out
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)

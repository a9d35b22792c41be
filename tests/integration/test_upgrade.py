"""An upgrade from the previous release (v0.1.0, taken from this repository's history), as docs/operations.md
describes it: the previous release's hub makes its database, a home and stored spawn options; the new hub
upgrades the database and its users find their servers, keys and files again."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest

from tests.harness import ROOT, keygen, ssh

PREVIOUS = "v0.1.0"
PREVIOUS_COMMIT = "a54ac18b7e81ccf71716addb72d9ef31646335d4"  # the tag's commit: a clone of main alone has no tags


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory):
    """The previous release's package and hub configuration, as it was released."""
    folder = tmp_path_factory.mktemp("previous")

    def find():
        for name in (f"{PREVIOUS}^{{commit}}", f"{PREVIOUS_COMMIT}^{{commit}}"):
            found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", name],
                                   capture_output=True, text=True)  # fmt: skip
            if found.returncode == 0:
                return found.stdout.strip()
        return None

    commit = find()
    if commit is None:  # a shallow clone: ask the clone's origin for the history
        shallow = (ROOT / ".git" / "shallow").exists()
        subprocess.run(["git", "-C", str(ROOT), "fetch", "--quiet", "--tags", *(["--unshallow"] if shallow else [])],
                       capture_output=True)  # fmt: skip
        commit = find()
    assert commit == PREVIOUS_COMMIT, (
        f"the previous release {PREVIOUS} ({PREVIOUS_COMMIT}) is not in this clone's history: clone it whole"
    )
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "devdock_spawner", "jupyterhub_config.py"],
        capture_output=True, check=True,
    )  # fmt: skip
    tarfile.open(fileobj=io.BytesIO(archive.stdout)).extractall(folder, filter="data")
    return folder


def test_upgrade_from_the_previous_release_keeps_servers_keys_and_files(make_hub, tmp_path_factory, previous_release):
    data = tmp_path_factory.mktemp("upgraded")
    key, line = keygen(tmp_path_factory.mktemp("ukeys"), "ada")
    user = "ada.lovelace"  # a name the previous release hashed into its slug (32 bits)
    old = make_hub(data_dir=data, start=False, config=previous_release / "jupyterhub_config.py",
        PYTHONPATH=str(previous_release), DEVDOCK_ACTIVITY_INTERVAL="300",
    )  # fmt: skip
    old.start()
    try:
        version = subprocess.run(
            [sys.executable, "-c", "import devdock_spawner._version as v; print(v.__version__)"],
            env={**os.environ, "PYTHONPATH": str(previous_release)}, cwd=data, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        assert version == "0.1.0"
        old.spawn(user, options={"ssh_keys": line})  # how 0.1 took keys: stored with the spawn options
        out = old.container(user).exec_run(["sh", "-c", "echo from-0.1 > ~/thesis.txt && whoami"], user="1000")
        old_login = out.output.decode().strip()
        old_volume = old.container(user).attrs["Mounts"][0]["Name"]
        old.stop_server(user)
    finally:
        old.stop()

    # The upgrade: the new release's hub, its database upgrade step, then the same data folder.
    new = make_hub(data_dir=data, start=False)
    upgrade = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "upgrade-db", "-f", str(new.config)],
        cwd=data, env=new.env, capture_output=True, text=True,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr[-3000:]
    new.start()
    try:
        new.spawn(user)  # no options: JupyterHub re-uses 0.1's stored ones, whose ssh_keys are dropped
        container = new.container(user)
        assert container.attrs["Mounts"][0]["Name"] == old_volume
        out = container.exec_run(["sh", "-c", "whoami; cat ~/thesis.txt"], user="1000").output.decode().split()
        assert out == [old_login, "from-0.1"]
        # The key 0.1 stored still opens the server (moved to the new key file), over the new SSH listener.
        assert ssh(new.server_state(user)["ssh_port"], old_login, key).stdout.strip() == old_login
        assert "ssh_keys" not in str(new.user_model(user)["servers"][""].get("user_options"))
        new.stop_server(user)
    finally:
        new.stop()

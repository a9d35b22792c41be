"""Running it for a year: offboarding that cannot leak, and no routine mistake that removes running servers."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import time

import pytest
import requests

from tests.harness import PREFIX, ROOT, RUN_ID, keygen, ssh


def _homes(client, owner: str) -> dict[str, str]:
    """{volume name: server} of the homes labelled as ``owner``'s."""
    volumes = client.volumes.list(filters={"label": [f"io.devdock.owner={owner}", f"io.devdock.test-run={RUN_ID}"]})
    return {v.name: v.attrs["Labels"].get("io.devdock.server", "") for v in volumes}


def _write(hub, user: str, server: str, text: str) -> None:
    out = hub.container(user, server).exec_run(["sh", "-c", f"echo {text} > ~/note.txt && cat ~/note.txt"], user="1000")
    assert out.output.decode().strip() == text


def _read(hub, user: str, server: str = "") -> str:
    out = hub.container(user, server).exec_run(["sh", "-c", "cat ~/note.txt 2>/dev/null || echo none"], user="1000")
    return out.output.decode().strip()


def test_deleting_a_user_removes_their_homes_and_keys_and_a_recreated_name_inherits_nothing(
    hub, docker_client, tmp_path
):
    key, line = keygen(tmp_path, "leaver")
    hub.save_ssh_keys("leaver", line)
    hub.spawn("leaver")
    hub.spawn("leaver", "proj")
    _write(hub, "leaver", "", "first-persons-thesis")
    _write(hub, "leaver", "proj", "first-persons-project")
    port = hub.server_state("leaver")["ssh_port"]
    hub.stop_server("leaver")
    hub.stop_server("leaver", "proj")
    assert sorted(_homes(docker_client, "leaver").values()) == ["", "proj"]  # positive control: both homes exist
    keyfile = hub.data_dir / "ssh-keys" / "leaver.pub"
    assert keyfile.exists()

    r = hub.api("DELETE", "/users/leaver")
    assert r.status_code == 204, r.text
    assert _homes(docker_client, "leaver") == {}
    assert not keyfile.exists()
    assert "removed home" in hub.log_tail(200)

    # The same username, created again (a returning student, a recycled account): a new, empty home, no keys.
    hub.spawn("leaver")
    assert _read(hub, "leaver") == "none"
    new_port = hub.server_state("leaver")["ssh_port"]
    assert ssh(new_port, "leaver", key).returncode == 255
    page = hub.browser_session("leaver").get(f"{hub.url}/hub/ssh", timeout=30).text
    assert re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.S).group(1).strip() == ""
    assert port  # the old port was released with the user
    hub.stop_server("leaver")


def test_deleting_a_named_server_removes_its_home_and_nothing_else(hub, docker_client):
    hub.spawn("np")
    hub.spawn("np", "scratch")
    _write(hub, "np", "", "keep-me")
    _write(hub, "np", "scratch", "throw-away")
    hub.stop_server("np", "scratch")
    r = hub.api("DELETE", "/users/np/servers/scratch", json={"remove": True})
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 30
    while "scratch" in _homes(docker_client, "np").values() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list(_homes(docker_client, "np").values()) == [""]
    assert _read(hub, "np") == "keep-me"
    hub.stop_server("np")


COURSE_TOOL_TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
def course_hub(make_hub):
    """A hub (offboarding = "remove", the default) with a course tool's service: it may list users, read and
    remove their servers (``delete:servers``), as the idle culler may, and nothing more."""
    extra = (
        f'c.JupyterHub.services.append({{"name": "course-tool", "api_token": "{COURSE_TOOL_TOKEN}"}})\n'
        'c.JupyterHub.load_roles.append({"name": "course-tool", "services": ["course-tool"], '
        '"scopes": ["delete:servers", "list:users", "read:servers"]})\n'
    )
    return make_hub("course", extra_config=extra)


def _remove_server(hub, user: str, server: str, token: str) -> None:
    """``DELETE .../servers/<server>`` with ``remove``, then wait until the hub has forgotten the server."""
    r = hub.api("DELETE", f"/users/{user}/servers/{server}", token=token, json={"remove": True})
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 60
    while server in hub.user_model(user).get("servers", {}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert server not in hub.user_model(user).get("servers", {})


def test_removing_a_named_server_erases_its_home_only_when_an_admin_asks(course_hub, docker_client):
    """Stopping is not erasing: a token with only ``delete:servers`` (a course tool's, the culler's) or the owner's
    own removes the server but keeps its home; an admin's removal of the same server (the control) erases it."""
    hub = course_hub
    hub.spawn("cu-ann", "lab")
    _write(hub, "cu-ann", "lab", "thesis-chapter-3")
    # A course tool removes the running server (stop, then remove: JupyterHub's scheduled path).
    _remove_server(hub, "cu-ann", "lab", COURSE_TOOL_TOKEN)
    assert "lab" in _homes(docker_client, "cu-ann").values()
    assert "kept the home" in hub.log_tail(300) and "service:course-tool removed it" in hub.log_tail(300)
    # The owner removes a stopped one themselves (JupyterHub's direct path): kept too, under the default policy.
    hub.spawn("cu-ann", "scratch")
    hub.stop_server("cu-ann", "scratch")
    _remove_server(hub, "cu-ann", "scratch", hub.token("cu-ann"))
    assert sorted(_homes(docker_client, "cu-ann").values()) == ["lab", "scratch"]
    # The same name made again finds its home, files and all.
    hub.spawn("cu-ann", "lab")
    assert _read(hub, "cu-ann", "lab") == "thesis-chapter-3"
    # Positive control: an admin (the devdock-ops service) removes the running server: its home is erased.
    _remove_server(hub, "cu-ann", "lab", hub.service_token)
    deadline = time.monotonic() + 30
    while "lab" in _homes(docker_client, "cu-ann").values() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list(_homes(docker_client, "cu-ann").values()) == ["scratch"]
    assert "removed home" in hub.log_tail(100)


@pytest.fixture(scope="module")
def archiving_hub(make_hub, tmp_path_factory):
    data = tmp_path_factory.mktemp("archiving")
    archive = data / "archive"
    archive.mkdir(mode=0o700)
    extra = f'c.DevDockSpawner.offboarding = "archive"\nc.DevDockSpawner.offboarding_archive = {str(archive)!r}\n'
    return make_hub(data_dir=data, extra_config=extra), archive


def test_archive_offboarding_writes_the_home_to_a_file_then_removes_it(archiving_hub, docker_client):
    hub, archive = archiving_hub
    hub.spawn("alumna")
    _write(hub, "alumna", "", "for-the-records")
    hub.stop_server("alumna")
    assert hub.api("DELETE", "/users/alumna").status_code == 204
    assert _homes(docker_client, "alumna") == {}
    (tarball,) = archive.iterdir()
    assert tarball.name.startswith(f"{PREFIX}-home-alumna-") and tarball.name.endswith(".tar.gz")
    assert tarball.stat().st_mode & 0o077 == 0  # root's alone
    with tarfile.open(tarball) as tar:
        assert tar.extractfile("./note.txt").read().decode().strip() == "for-the-records"


TiB = 1024**4
MiB = 1024**2


def _sh(hub, user: str, script: str) -> str:
    return hub.container(user).exec_run(["sh", "-c", script], user="1000").output.decode().strip()


def _make_sparse(hub, user: str, size: int) -> None:
    """``truncate -s`` a file far larger than the disk, with a marker in its last bytes."""
    made = _sh(
        hub, user,
        f"truncate -s {size} ~/huge && printf end-marker | dd of=$HOME/huge bs=1 seek={size - 10} conv=notrunc "
        "2>/dev/null && stat -c %s ~/huge",
    )  # fmt: skip
    assert made == str(size), made


def test_archive_offboarding_archives_a_sparse_file_far_larger_than_the_disk_quickly_and_small(
    archiving_hub, docker_client
):
    """``truncate -s 15T ~/huge``: offboarding's archive keeps its holes (tar --sparse): it ends in seconds, small,
    and removes the home, instead of reading 15 TiB of zeros for hours and giving up with the home kept."""
    hub, archive = archiving_hub
    hub.spawn("sparse-leaver")
    _make_sparse(hub, "sparse-leaver", 15 * TiB)
    hub.stop_server("sparse-leaver")
    before = set(archive.iterdir())
    # The harness's API call gives up after 60 s: a hanging archive fails the test, it does not hang it.
    assert hub.api("DELETE", "/users/sparse-leaver").status_code == 204
    assert _homes(docker_client, "sparse-leaver") == {}
    (tarball,) = set(archive.iterdir()) - before
    assert tarball.stat().st_size < MiB, tarball.stat().st_size
    with tarfile.open(tarball) as tar:
        member = tar.getmember("./huge")
        assert member.issparse() and member.size == 15 * TiB  # positive control: the file's apparent size is kept
        data = tar.extractfile(member)
        data.seek(15 * TiB - 10)
        assert data.read() == b"end-marker"


def test_backup_and_restore_of_a_sparse_file_far_larger_than_the_disk_are_quick_small_and_sparse(
    docker_client, tmp_path_factory, make_hub
):
    """backup.sh and restore.sh with ``truncate -s 15T ~/huge`` in a home (the host's disk is far smaller): a small
    archive, and the file back at 15 TiB taking no room."""
    data = tmp_path_factory.mktemp("sparse-backup")
    hub = make_hub(data_dir=data, start=False)
    hub.start()
    try:
        hub.spawn("sparse-sam")
        _make_sparse(hub, "sparse-sam", 15 * TiB)
        hub.stop_server("sparse-sam")
        backup = tmp_path_factory.mktemp("backup") / "devdock-backup"
        env = {**os.environ, "DEVDOCK_DATA_DIR": str(data), "DEVDOCK_HUB_ID": hub.env["DEVDOCK_HUB_ID"]}
        # Without --sparse tar reads 15 TiB of zeros (days): the timeout fails the test instead of hanging it.
        result = subprocess.run(
            [str(ROOT / "scripts/backup.sh"), str(backup)], env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr
        (home,) = _homes(docker_client, "sparse-sam")
        assert (backup / "homes" / f"{home}.tar.gz").stat().st_size < MiB
        row = (backup / "homes" / "volumes.tsv").read_text().split("\t")
        assert row[0] == home and row[2:] == ["0", "\n"], row  # a plain home: no limit recorded, none made
        docker_client.volumes.get(home).remove()
        env["DEVDOCK_DATA_DIR"] = str(tmp_path_factory.mktemp("restored-hub-data"))  # this hub runs on
        result = subprocess.run(
            [str(ROOT / "scripts/restore.sh"), str(backup)], env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr
        assert not docker_client.volumes.get(home).attrs["Options"]  # a plain volume again, as it was
        hub.spawn("sparse-sam")
        assert _sh(hub, "sparse-sam", "stat -c %s ~/huge") == str(15 * TiB)  # the apparent size survived
        assert int(_sh(hub, "sparse-sam", "du -k ~/huge | cut -f1")) < 1024  # and it is still holes
        assert _sh(hub, "sparse-sam", "tail -c 10 ~/huge") == "end-marker"
        hub.stop_server("sparse-sam")
    finally:
        hub.stop()


@pytest.mark.parametrize("database", ["new-empty", "older-backup"])
def test_a_hub_with_a_new_or_restored_database_leaves_running_servers_running(make_hub, tmp_path_factory, database):
    first = make_hub(f"db-{database}-a", start=False)
    hub_id = first.env["DEVDOCK_HUB_ID"]
    first.start()
    try:
        first.create_user("olga")
        first.stop()
        backup = tmp_path_factory.mktemp("backup") / "jupyterhub.sqlite"
        shutil.copy(first.data_dir / "jupyterhub.sqlite", backup)  # before olga's server existed
        first.start()
        first.spawn("olga")
        _write(first, "olga", "", "unsaved-work-in-progress")
        container = first.container("olga")
    finally:
        first.stop()

    second = make_hub(f"db-{database}-b", start=False, DEVDOCK_HUB_ID=hub_id)
    if database == "older-backup":
        shutil.copy(backup, second.data_dir / "jupyterhub.sqlite")
        shutil.copy(first.data_dir / "jupyterhub_cookie_secret", second.data_dir / "jupyterhub_cookie_secret")
        with sqlite3.connect(second.data_dir / "jupyterhub.sqlite") as db:
            assert db.execute("SELECT count(*) FROM users WHERE name = 'olga'").fetchone() == (1,)
    second.start()
    try:
        page = second.browser_session("admin").get(f"{second.url}/hub/devdock/admin", timeout=30).text
        assert 'id="devdock-unknown"' in page and container.name in page
        container.reload()
        assert container.status == "running"
        assert "runs but this hub's database does not know it" in second.log_tail(300)
        # A spawn of somebody else (the first allocation) removes nothing either.
        second.spawn("neighbour")
        container.reload()
        assert container.status == "running"
        assert _read(first, "olga") == "unsaved-work-in-progress"
        # olga's next start replaces her server; her home is the same.
        second.spawn("olga")
        assert _read(second, "olga") == "unsaved-work-in-progress"
        token = second.token("olga")
        r = requests.get(second.server_url("olga") + "api/status", headers={"Authorization": f"token {token}"})
        assert r.status_code == 200
        second.stop_server("olga")
        second.stop_server("neighbour")
    finally:
        second.stop()


def test_a_metrics_token_reads_metrics_and_nothing_else(hub):
    """The Prometheus recipe: DEVDOCK_METRICS_TOKEN is a service token with read:metrics only."""
    headers = {"Authorization": f"token {hub.metrics_token}"}
    metrics = requests.get(f"{hub.url}/hub/metrics", headers=headers, timeout=30)
    assert metrics.status_code == 200 and "devdock_gpus_total" in metrics.text
    assert requests.get(f"{hub.url}/hub/metrics", timeout=30).status_code == 403  # no token, no metrics
    for path in ("/users", "/users/admin", "/services"):
        assert requests.get(f"{hub.url}/hub/api{path}", headers=headers, timeout=30).status_code in (403, 404), path
    r = requests.post(f"{hub.url}/hub/api/users/intruder", headers=headers, timeout=30)
    assert r.status_code == 403


def test_backup_while_running_then_restore_finds_servers_keys_and_files_again(
    docker_client, tmp_path_factory, make_hub
):
    """scripts/backup.sh with the hub and a server running; everything lost; scripts/restore.sh; all back."""
    data = tmp_path_factory.mktemp("backed-up")
    hub = make_hub(data_dir=data, start=False)
    hub.start()
    key, line = keygen(tmp_path_factory.mktemp("bkeys"), "bea")
    try:
        hub.save_ssh_keys("bea", line)
        hub.spawn("bea")
        _write(hub, "bea", "", "experiment-results")
        backup = tmp_path_factory.mktemp("backup") / "devdock-backup"
        env = {**os.environ, "DEVDOCK_DATA_DIR": str(data), "DEVDOCK_HUB_ID": hub.env["DEVDOCK_HUB_ID"]}
        result = subprocess.run([str(ROOT / "scripts/backup.sh"), str(backup)], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        hub.stop_server("bea")
    finally:
        hub.stop()
    # Disaster: the databases, the keys and the home are gone.
    for name in ("jupyterhub.sqlite", "devdock-accounting.sqlite", "jupyterhub_cookie_secret"):
        (data / name).unlink()
    shutil.rmtree(data / "ssh-keys")
    (home,) = _homes(docker_client, "bea")
    docker_client.volumes.get(home).remove()
    result = subprocess.run([str(ROOT / "scripts/restore.sh"), str(backup)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    hub.start()
    try:
        assert "bea" in {u["name"] for u in hub.api("GET", "/users").json()}
        hub.spawn("bea")
        assert _read(hub, "bea") == "experiment-results"
        assert ssh(hub.server_state("bea")["ssh_port"], "bea", key).stdout.strip() == "bea"
        assert docker_client.volumes.get(home).attrs["Labels"]["io.devdock.owner"] == "bea"
        hub.stop_server("bea")
        # The accounting came back too: the run that was going on at the backup, and the one after the restore.
        usage = hub.browser_session("bea").get(f"{hub.url}/hub/devdock/usage?format=json", timeout=30).json()
        assert [r["user"] for r in usage["runs"]] == ["bea", "bea"], usage
    finally:
        hub.stop()

"""Homes with a size limit (``home_size``) on the real engine and hub: a home is an ext4 image on a loop device,
writing past it fails with "No space left on device" in that server only, the user's files stay and the user is
told; a larger profile grows it; a home made without a limit keeps working; offboarding removes the image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import time

import pytest
import requests

from tests.harness import ROOT

MiB = 1024**2
PROFILES = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "roomy", "display_name": "Roomy", "overrides": {"home_size": "96M"}},
    {"slug": "unbounded", "display_name": "No limit", "overrides": {"home_size": ""}},
]


@pytest.fixture(scope="module")
def shub(make_hub, tmp_path_factory):
    images = tmp_path_factory.mktemp("home-images")
    extra = (
        f"c.DevDockSpawner.profile_list = {PROFILES!r}\n"
        'c.DevDockSpawner.home_size = "64M"\n'
        "c.DevDockSpawner.usage_interval = 2\n"
        f"c.DevDockSpawner.home_images_dir = {str(images)!r}\n"
    )
    hub = make_hub("homesize", extra_config=extra)
    hub.images = images
    return hub


def _sh(container, script: str) -> str:
    return container.exec_run(["sh", "-c", script], user="1000").output.decode()


def _home_volume(container) -> str:
    return next(m["Name"] for m in container.attrs["Mounts"] if m["Destination"].startswith("/home/"))


def _home_bytes(container) -> int:
    return int(_sh(container, "df -B1 --output=size ~ | tail -1").strip())


def _attached(image) -> bool:
    """Whether a loop device holds ``image``, as the host's ``losetup -j`` sees it (by device and inode)."""
    found = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True)
    return found.stdout.startswith("/dev/loop")


def _status(hub, user: str) -> dict:
    headers = {"Authorization": f"token {hub.token(user)}"}
    return requests.get(hub.server_url(user) + "api/devdock/status", headers=headers, timeout=30).json()


def test_home_size_limit_writing_past_it_fails_with_no_space_in_that_home_only_and_files_stay(shub, docker_client):
    shub.spawn("hs-hana")
    shub.spawn("hs-ivan")
    hana, ivan = shub.container("hs-hana"), shub.container("hs-ivan")
    volume = docker_client.volumes.get(_home_volume(hana))
    image = shub.images / f"{volume.name}.img"
    assert volume.attrs["Options"]["type"] == "ext4" and image.exists()
    assert 48 * MiB < _home_bytes(hana) <= 64 * MiB  # the user's df shows the limit (less ext4's own), not the disk
    assert _home_bytes(ivan) <= 64 * MiB
    host_free = shutil.disk_usage(shub.images).free
    assert "notice" not in _status(shub, "hs-hana")

    out = _sh(
        hana, "echo precious > ~/notes.txt && dd if=/dev/zero of=$HOME/big bs=1M count=100 2>&1; sync; cat ~/notes.txt"
    )
    assert "No space left on device" in out and "precious" in out, out
    used = os.stat(image).st_blocks * 512
    assert 40 * MiB < used <= 66 * MiB  # the write really went to the image, and no further
    assert host_free - shutil.disk_usage(shub.images).free < 70 * MiB  # the host lost at most the home's size
    assert "Your home is full" in _status(shub, "hs-hana")["notice"]
    # The neighbour's home is untouched and still takes writes (positive control: writing works).
    assert _sh(ivan, "dd if=/dev/zero of=$HOME/data bs=1M count=20 2>&1 && echo wrote").strip().endswith("wrote")

    # Room again: the notice goes, and the host gets the space back (the home mounts with discard).
    assert "precious" in _sh(hana, "rm ~/big && sync && cat ~/notes.txt")
    assert "notice" not in _status(shub, "hs-hana")
    deadline = time.monotonic() + 30
    while os.stat(image).st_blocks * 512 > 20 * MiB and time.monotonic() < deadline:
        time.sleep(1)
    assert os.stat(image).st_blocks * 512 <= 20 * MiB
    # The files survive a restart, and a stopped server holds no loop device.
    shub.stop_server("hs-hana")
    assert not _attached(image)
    shub.spawn("hs-hana")
    assert _sh(shub.container("hs-hana"), "cat ~/notes.txt").strip() == "precious"
    assert _attached(image)  # positive control for the check above
    shub.stop_server("hs-hana")
    shub.stop_server("hs-ivan")


def test_home_size_of_a_larger_profile_grows_the_home_at_its_next_start_and_files_stay(shub):
    shub.spawn("hs-gwen")
    container = shub.container("hs-gwen")
    _sh(container, "echo mine > ~/kept.txt")
    small = _home_bytes(container)
    shub.stop_server("hs-gwen")
    shub.spawn("hs-gwen", options={"profile": "roomy"})
    container = shub.container("hs-gwen")
    assert small < 64 * MiB < _home_bytes(container) <= 96 * MiB
    assert _sh(container, "cat ~/kept.txt").strip() == "mine"
    shub.stop_server("hs-gwen")
    # A smaller limit never shrinks a home: back on the default profile it keeps its room and its files.
    shub.spawn("hs-gwen")
    assert _home_bytes(shub.container("hs-gwen")) > 64 * MiB
    shub.stop_server("hs-gwen")


def test_home_size_a_home_made_without_a_limit_keeps_working_unbounded(shub, docker_client):
    shub.spawn("hs-olga", options={"profile": "unbounded"})
    container = shub.container("hs-olga")
    volume = docker_client.volumes.get(_home_volume(container))
    assert not volume.attrs["Options"] and _home_bytes(container) > 1024 * MiB  # a plain volume: the host's disk
    _sh(container, "echo from-before > ~/old.txt")
    shub.stop_server("hs-olga")
    shub.spawn("hs-olga")  # the default profile now has a limit: the existing home stays as it was, files and all
    container = shub.container("hs-olga")
    assert _sh(container, "cat ~/old.txt").strip() == "from-before"
    assert _home_bytes(container) > 1024 * MiB
    assert not (shub.images / f"{volume.name}.img").exists()
    shub.stop_server("hs-olga")


def test_home_size_a_missing_image_is_refused_with_a_sentence_and_nothing_is_made(shub, docker_client):
    shub.spawn("hs-mona")
    volume = _home_volume(shub.container("hs-mona"))
    shub.stop_server("hs-mona")
    image = shub.images / f"{volume}.img"
    moved = image.with_suffix(".moved")
    image.rename(moved)  # an admin's mistake, or a disk that lost it
    try:
        r = shub.api("POST", "/users/hs-mona/server")
        assert r.status_code == 500 and "is missing" in r.json()["message"], r.text
        assert not image.exists()  # no fresh, empty home in its place
        assert shub.container("hs-mona") is None
    finally:
        moved.rename(image)
    shub.spawn("hs-mona")  # positive control: with its image back, the same home starts
    shub.stop_server("hs-mona")


def test_home_size_offboarding_removes_the_home_image_and_its_volume(shub, docker_client):
    shub.spawn("hs-quin")
    volume = _home_volume(shub.container("hs-quin"))
    image = shub.images / f"{volume}.img"
    shub.stop_server("hs-quin")
    assert image.exists()  # positive control
    assert shub.api("DELETE", "/users/hs-quin").status_code == 204
    assert not image.exists() and not _attached(image)
    assert not docker_client.volumes.list(filters={"name": volume})


def test_home_size_backup_reads_a_stopped_servers_image_home_and_lets_its_loop_device_go(shub, docker_client, tmp_path):
    shub.spawn("hs-pia")
    container = shub.container("hs-pia")
    volume = _home_volume(container)
    _sh(container, "echo field-notes > ~/notes.txt")
    shub.stop_server("hs-pia")
    # The home is the labelled image volume devdock made (what backup.sh selects by), also once stopped.
    attrs = docker_client.volumes.get(volume).attrs
    assert attrs["Options"]["type"] == "ext4" and attrs["Labels"]["io.devdock.owner"] == "hs-pia", attrs
    image = shub.images / f"{volume}.img"
    assert not _attached(image)  # stopped: its image is on no loop device, so nothing can mount it by accident
    backup = tmp_path / "backup"
    env = {**os.environ, "DEVDOCK_DATA_DIR": str(shub.data_dir), "DEVDOCK_HUB_ID": shub.env["DEVDOCK_HUB_ID"]}
    result = subprocess.run([str(ROOT / "scripts/backup.sh"), str(backup)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    listed = (backup / "homes" / "volumes.tsv").read_text()
    assert (backup / "homes" / f"{volume}.tar.gz").exists(), f"{volume} not backed up: {listed}\n{result.stderr}"
    with tarfile.open(backup / "homes" / f"{volume}.tar.gz") as archive:
        assert archive.extractfile("./notes.txt").read() == b"field-notes\n"
    assert not _attached(image)


def test_home_size_what_a_limited_home_holds_is_on_the_admin_page_and_in_metrics(shub):
    shub.spawn("hs-rosa")
    _sh(shub.container("hs-rosa"), "dd if=/dev/urandom of=$HOME/data bs=1M count=24 2>/dev/null")
    headers = {"Authorization": f"token {shub.metrics_token}"}
    pattern = re.compile(r'devdock_server_home_bytes\{server="",user="hs-rosa"\} (\S+)')
    held, deadline = 0.0, time.monotonic() + 60  # homes are read every tenth round (usage_interval = 2 s)
    while time.monotonic() < deadline and held < 24 * MiB:
        found = pattern.search(requests.get(f"{shub.url}/hub/metrics", headers=headers, timeout=30).text)
        held = float(found.group(1)) if found else 0.0
        time.sleep(2)
    assert 24 * MiB <= held < 40 * MiB, held  # what rosa wrote (and ext4's own few blocks), not the whole image
    metrics = requests.get(f"{shub.url}/hub/metrics", headers=headers, timeout=30).text
    room = float(re.search(r'devdock_server_home_limit_bytes\{server="",user="hs-rosa"\} (\S+)', metrics).group(1))
    assert 48 * MiB < room <= 64 * MiB  # the limit, as the user's df shows it
    page = shub.browser_session("admin").get(f"{shub.url}/hub/devdock/admin", timeout=30).text
    assert re.search(r"2[4-9]\.\d MiB of [56]\d\.\d MiB", page), "the admin page shows the home's use of its room"
    shub.stop_server("hs-rosa")


TiB = 1024**4


def test_home_size_a_sparse_file_far_larger_than_the_home_is_backed_up_and_restored_small_and_with_the_limit(
    shub, docker_client, tmp_path
):
    """``truncate -s 2T ~/huge`` in a 64 MiB home: backup.sh archives its holes as holes (a small archive, in
    seconds, not terabytes of zeros), and restore.sh makes the home again as a 64 MiB image (not a plain volume
    without a limit), where the file is back at its full apparent size, sparse."""
    shub.spawn("hs-sid")
    volume = _home_volume(shub.container("hs-sid"))
    # 2 TiB is near the largest file ext4 allows with the 1 KiB blocks mkfs gives a home this small.
    made = _sh(
        shub.container("hs-sid"),
        f"truncate -s 2T ~/huge && printf end-marker | dd of=$HOME/huge bs=1 seek={2 * TiB - 10} conv=notrunc "
        "2>/dev/null && echo notes > ~/notes.txt && stat -c %s ~/huge",
    )
    assert made.strip() == str(2 * TiB), made
    shub.stop_server("hs-sid")
    image = shub.images / f"{volume}.img"
    limit = os.path.getsize(image)
    assert limit == 64 * MiB  # positive control: the home is a 64 MiB image

    backup = tmp_path / "backup"
    env = {**os.environ, "DEVDOCK_DATA_DIR": str(shub.data_dir), "DEVDOCK_HUB_ID": shub.env["DEVDOCK_HUB_ID"]}
    # Without --sparse tar reads 2 TiB of zeros (hours): the timeout fails the test instead of hanging it.
    result = subprocess.run(
        [str(ROOT / "scripts/backup.sh"), str(backup)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in (backup / "homes" / "volumes.tsv").read_text().splitlines()]
    (row,) = [r for r in rows if r[0] == volume]
    assert row[2:] == [str(limit), str(shub.images)], row  # the limit and the images' folder are recorded
    archive = backup / "homes" / f"{volume}.tar.gz"
    assert archive.stat().st_size < MiB, archive.stat().st_size
    with tarfile.open(archive) as tar:
        member = tar.getmember("./huge")
        assert member.issparse() and member.size == 2 * TiB  # the apparent size is in the archive

    # Disaster: the home and its image are gone. Restore (the hub's data into a scratch folder: this hub runs on).
    docker_client.volumes.get(volume).remove()
    image.unlink()
    env["DEVDOCK_DATA_DIR"] = str(tmp_path / "restored-hub-data")
    env["DEVDOCK_HOME_IMAGES_DIR"] = str(shub.images)
    done = subprocess.run(
        [str(ROOT / "scripts/restore.sh"), str(backup)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    attrs = docker_client.volumes.get(volume).attrs
    assert attrs["Options"]["type"] == "ext4" and attrs["Labels"]["io.devdock.owner"] == "hs-sid", attrs
    assert os.path.getsize(image) == limit and not _attached(image)
    assert image.stat().st_blocks * 512 < 16 * MiB  # the restored sparse file takes no room in the image

    shub.spawn("hs-sid")
    container = shub.container("hs-sid")
    assert 48 * MiB < _home_bytes(container) <= 64 * MiB  # df inside shows the limit again
    assert _sh(container, "stat -c %s ~/huge").strip() == str(2 * TiB)
    assert int(_sh(container, "du -k ~/huge | cut -f1").strip()) < 1024  # sparse: holes, not zeros
    assert _sh(container, "tail -c 10 ~/huge; echo; cat ~/notes.txt").split() == ["end-marker", "notes"]
    out = _sh(container, "dd if=/dev/zero of=$HOME/big bs=1M count=100 2>&1")
    assert "No space left on device" in out, out  # writing past the limit fails, as before the disaster
    shub.stop_server("hs-sid")

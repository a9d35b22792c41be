"""No single user can take the shared box down: memory, CPU, /tmp and logs bounded by default, read back from the
real containers; an out-of-memory kill stays inside its server and its user is told; the hub survives a full disk."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time

import pytest
import requests

from tests.harness import run_in_kernel, run_in_terminal

PROFILES = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "tiny", "display_name": "Tiny", "overrides": {"mem_limit": "400M"}},
]


@pytest.fixture(scope="module")
def lhub(make_hub):
    extra = f"c.DevDockSpawner.profile_list = {PROFILES!r}\nc.DevDockSpawner.usage_interval = 3\n"
    return make_hub("limits", extra_config=extra)


def test_limits_by_default_are_what_the_real_containers_hostconfig_says(lhub):
    lhub.spawn("lim")
    container = lhub.container("lim")
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 8 * 1024**3 and host["MemorySwap"] == host["Memory"]  # no swap past the limit
    assert 0 < host["CpuQuota"] < (os.cpu_count() or 1) * host["CpuPeriod"]  # a CPU limit below the whole host
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
    assert host["OomScoreAdj"] == 500  # the host's OOM killer takes a user's server before the hub
    assert host["PidsLimit"] == 4096
    assert "size=2g" in host["Tmpfs"]["/tmp"] and "size=2g" in host["Tmpfs"]["/var/tmp"]
    # Outside the home and the tmpfs, a user can write nowhere: the container layer stays bounded.
    tmpfs = "-e '^/tmp$' -e '^/var/tmp$' -e '^/run/lock$' -e '^/var/lock$'"
    script = f"find / -xdev -writable 2>/dev/null | grep -v -e '^/proc' -e '^/sys' -e \"^$HOME\" {tmpfs}; echo end"
    assert container.exec_run(["sh", "-c", script], user="1000").output.decode().split() == ["end"]
    lhub.stop_server("lim")


def test_writing_past_tmp_fails_with_no_space_and_earlier_files_stay(lhub, docker_client):
    lhub.spawn("filler")
    container = lhub.container("filler")
    script = (
        "echo precious > /tmp/notes.txt; "
        "dd if=/dev/zero of=/tmp/big bs=1M count=2100 2>&1; "
        "cat /tmp/notes.txt; rm -f /tmp/big; echo ok"
    )
    out = container.exec_run(["sh", "-c", script], user="1000").output.decode()
    assert "No space left on device" in out and "precious" in out and out.strip().endswith("ok"), out
    lhub.stop_server("filler")


def test_a_process_past_its_memory_limit_is_killed_in_that_server_only_and_its_user_is_told(lhub):
    lhub.spawn("greedy", options={"profile": "tiny"})
    lhub.spawn("calm")
    greedy, calm = lhub.token("greedy"), lhub.token("calm")
    output = run_in_terminal(
        lhub.server_url("greedy"),
        greedy,
        "python3 -c 'b = bytearray(1600 * 1024 * 1024); print(len(b))'; printf 'rc%s\\n' $?",
        expect="\nrc",
        timeout=60,
    )
    assert "\nrc137" in output, output  # SIGKILL from the kernel's OOM killer, inside this container
    # The server that hit its limit, the neighbour and the hub all carry on.
    for user, token in (("greedy", greedy), ("calm", calm)):
        r = requests.get(lhub.server_url(user) + "api/status", headers={"Authorization": f"token {token}"})
        assert r.status_code == 200, (user, r.status_code)
    assert requests.get(f"{lhub.url}/hub/api/", timeout=10).status_code == 200
    # The user is told, on their home page; the admin sees it too.
    deadline = time.monotonic() + 30
    page = ""
    while time.monotonic() < deadline:
        page = lhub.browser_session("greedy").get(f"{lhub.url}/hub/home", timeout=30).text
        if "devdock-oom" in page:
            break
        time.sleep(1)
    assert "ran out of memory" in page and "400.0 MiB" in page, page[-2000:]
    assert lhub.metric('devdock_server_oom_kills_total{server="",user="greedy"}') >= 1
    calm_page = lhub.browser_session("calm").get(f"{lhub.url}/hub/home", timeout=30).text
    assert "ran out of memory" not in calm_page
    lhub.stop_server("greedy")
    lhub.stop_server("calm")


def test_50_mb_of_output_leaves_the_containers_log_under_its_limit(lhub, docker_client):
    lhub.spawn("chatty")
    container = lhub.container("chatty")
    # A kernel's stray output (a C library's warnings, a subprocess) goes to the server's own log: flood it.
    flood = "yes 'a line that repeats, as a print loop would' | head -c 50000000 >&2"
    code = f"import subprocess\nsubprocess.run({flood!r}, shell=True)"
    url, token = lhub.server_url("chatty"), lhub.token("chatty")
    result = run_in_kernel(url, token, code)
    assert result["status"] == "ok", result["error"] or result["stdout"][-500:]
    # The server came through the flood: a new kernel still runs code (its output's order against the flood's,
    # which ipykernel forwards from another thread, is not something to wait on).
    assert run_in_kernel(url, token, "print(6 * 7)")["stdout"].strip() == "42"
    container.reload()
    log = container.attrs["LogPath"]
    folder, name = os.path.dirname(log), os.path.basename(log)
    files = [f for f in os.listdir(folder) if f.startswith(name)]
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    assert len(files) <= 3 and total <= 3 * 10 * 1024**2 + 1024**2, (files, total)
    assert total > 5 * 1024**2  # positive control: the flood did reach the log (it was rotated, not lost)
    lhub.stop_server("chatty")


def test_admins_see_each_servers_memory_cpu_and_home_and_so_does_prometheus(lhub):
    lhub.spawn("seen")
    deadline = time.monotonic() + 40
    row = ""
    while time.monotonic() < deadline:
        page = lhub.browser_session("admin").get(f"{lhub.url}/hub/devdock/admin", timeout=30).text
        row = page.split('data-user="seen"', 1)[-1].split("</tr>", 1)[0]
        # The home's size comes from the engine's df a round after the home was filled at the server's start.
        home = lhub.metric('devdock_server_home_bytes{server="",user="seen"}', missing=0.0)
        if "MiB of 8.0 GiB" in row and '<td class="home"></td>' not in row and home > 0:
            break
        time.sleep(2)
    assert "MiB of 8.0 GiB" in row, row
    assert lhub.metric('devdock_server_memory_limit_bytes{server="",user="seen"}') == 8 * 1024**3
    assert lhub.metric('devdock_server_memory_bytes{server="",user="seen"}') > 10 * 1024**2
    assert lhub.metric('devdock_server_home_bytes{server="",user="seen"}') > 0
    lhub.stop_server("seen")


def test_the_hub_survives_a_full_disk_says_so_and_its_database_stays_whole(make_hub, tmp_path_factory):
    base = tmp_path_factory.mktemp("fulldisk")
    data = base / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(data)], check=True)
    try:
        extra = (
            "c.DevDockSpawner.hub_min_free_mb = 8\nc.DevDockSpawner.hub_disk_reserve_mb = 16\n"
            "c.DevDockSpawner.usage_interval = 2\n"
        )
        hub = make_hub(data_dir=base / "hub", start=False, extra_config=extra, DEVDOCK_DATA_DIR=str(data))
        hub.start()
        try:
            hub.spawn("early")  # positive control: servers start while there is room, and the reserve is taken
            assert (data / ".devdock-disk-reserve").stat().st_size == 16 * 1024**2
            hub.stop_server("early")
            # Something fills the disk up to the last byte.
            subprocess.run(["dd", "if=/dev/zero", f"of={data}/ballast", "bs=1M", "count=64"], capture_output=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "The hub's disk is full" not in hub.log_tail(200):
                time.sleep(1)
            assert "gave back the 16 MiB disk reserve" in hub.log_tail(200)
            # The hub keeps working (its database can be written: a new user), refuses starts with a sentence.
            hub.create_user("late")
            r = hub.api("POST", "/users/late/server")
            assert r.status_code == 503 and "The hub's disk is full" in r.json()["message"], r.text
            assert hub.container("late") is None
            page = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/admin", timeout=30).text
            assert 'id="devdock-disk-full"' in page
        finally:
            hub.stop()
        with contextlib.closing(sqlite3.connect(data / "jupyterhub.sqlite")) as db:  # closed: the umount needs it
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            names = {row[0] for row in db.execute("SELECT name FROM users")}
        assert {"early", "late"} <= names
        os.unlink(data / "ballast")  # the admin frees space
        hub.start()
        try:
            hub.spawn("late")
            hub.stop_server("late")
        finally:
            hub.stop()
    finally:
        if subprocess.run(["umount", str(data)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(data)], check=False)

"""Failure: restarts, bursts, an unreachable engine, containers removed behind the hub's back, bad images."""

from __future__ import annotations

import concurrent.futures
import time

import docker
import pytest
import requests

from tests import harness
from tests.harness import PREFIX, devices_mode_config

UUIDS = ["GPU-33333333-aaaa-bbbb-cccc-000000000000", "GPU-44444444-aaaa-bbbb-cccc-000000000000"]
EXTRA = """
c.DevDockSpawner.profile_list = [
    {"slug": "cpu", "display_name": "Desktop", "default": True},
    {"slug": "gpu-1", "display_name": "One GPU", "gpus": 1},
    {"slug": "no-image", "display_name": "Broken", "overrides": {"image": "devdock/does-not-exist:0"}},
    {"slug": "exits", "display_name": "Exits at once", "overrides": {"image": "debian:bookworm-slim"}},
    {
        "slug": "small",
        "display_name": "Small",
        "overrides": {"mem_limit": "1G", "cpu_limit": 0.5, "shm_size": "128m", "pids_limit": 256},
    },
]
c.Spawner.poll_interval = 2
c.DevDockSpawner.mem_limit = "3G"
c.DevDockSpawner.cpu_limit = 1.25
"""


@pytest.fixture(scope="module")
def fhub(make_hub, device_nodes):
    return make_hub("failure", extra_config=EXTRA + devices_mode_config(device_nodes, UUIDS))


def _wait_gone(hub, name: str, timeout: float = 30) -> None:
    """Until the hub lists no running or pending default server for ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = hub.user_model(name)["servers"].get("") or {}
        if not server.get("ready") and not server.get("pending"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the hub still lists {name}'s server after {timeout}s")


@pytest.mark.parametrize("how", ["removed", "stopped"])
def test_container_lost_behind_the_hubs_back_frees_its_gpu_and_the_user_can_start_again(fhub, how):
    user = f"lost-{how}"
    fhub.spawn(user, options={"profile": "gpu-1"})
    assert fhub.metric("devdock_gpus_allocated") == 1
    container = fhub.container(user)
    if how == "removed":
        container.remove(force=True)
    else:
        container.stop(timeout=1)
    _wait_gone(fhub, user)  # poll() noticed, the hub stopped the server
    assert fhub.metric("devdock_gpus_allocated") == 0
    assert "/user/" + user not in fhub.proxy_routes()
    fhub.spawn(user, options={"profile": "gpu-1"})
    assert fhub.metric("devdock_gpus_allocated") == 1
    fhub.stop_server(user)


def test_profile_limits_reach_the_container_and_do_not_leak_into_the_next_spawn(fhub):
    fhub.spawn("limited", options={"profile": "small"})
    host = fhub.container("limited").attrs["HostConfig"]
    assert host["Memory"] == 1024**3
    assert (host["CpuQuota"], host["CpuPeriod"]) == (50_000, 100_000)
    assert host["ShmSize"] == 128 * 1024**2
    assert host["PidsLimit"] == 256
    fhub.stop_server("limited")
    fhub.spawn("limited", options={"profile": "cpu"})
    host = fhub.container("limited").attrs["HostConfig"]
    # back to the site's settings (EXTRA), not the last profile's
    assert (host["Memory"], host["CpuQuota"], host["PidsLimit"]) == (3 * 1024**3, 125_000, 4096)
    assert host["ShmSize"] == 512 * 1024**2
    fhub.stop_server("limited")


def test_missing_image_gives_a_clear_message_and_leaves_nothing_behind(fhub, docker_client):
    fhub.create_user("noimage")
    r = fhub.api("POST", "/users/noimage/server", json={"profile": "no-image"})
    assert r.status_code == 503
    assert "devdock/does-not-exist:0 is not available on this server" in r.json()["message"]
    assert fhub.container("noimage") is None
    assert not docker_client.volumes.list(filters={"name": f"{PREFIX}-home-noimage"})


def test_image_that_exits_at_once_fails_fast_with_its_output_and_leaves_no_container(fhub):
    fhub.create_user("exits")
    r = fhub.api("POST", "/users/exits/server", json={"profile": "exits"})
    # 500, not 202: the start failed while the request was still waiting (JupyterHub's slow_spawn_timeout,
    # 10 s), so devdock noticed the exit itself instead of waiting out the 90 s http_timeout.
    assert r.status_code == 500, r.text
    message = r.json()["message"]
    assert "stopped right after starting" in message and "exit code" in message
    # debian's image runs bash, which finds no input and exits 0 without a word: the message says so.
    assert "exit code 0" in message and "Its last output: (none)" in message
    _wait_gone(fhub, "exits")
    assert fhub.container("exits") is None


def test_twenty_concurrent_spawns_then_a_hub_restart_lose_nothing(fhub):
    users = [f"burst{i:02d}" for i in range(20)]
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda u: _try_spawn(fhub, u), users))
    print(f"\n20 concurrent spawns: {time.monotonic() - t0:.1f}s")
    failures = [(u, o) for u, o in zip(users, outcomes, strict=True) if o is not True]
    assert not failures, failures
    ports = [fhub.server_state(u)["ssh_port"] for u in users]
    assert len(set(ports)) == 20
    routes = fhub.proxy_routes()
    assert all(f"/user/{u}" in routes for u in users)

    fhub.restart()
    t1 = time.monotonic()
    for user in users:
        fhub.wait_ready(user, timeout=60)
    routes = fhub.proxy_routes()
    print(f"hub restart with 20 servers: all ready and routed {time.monotonic() - t1:.1f}s after the hub answered")
    assert all(f"/user/{u}" in routes for u in users)
    assert [fhub.server_state(u)["ssh_port"] for u in users] == ports
    token = fhub.token(users[0])
    r = requests.get(fhub.server_url(users[0]) + "api/status", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(fhub.stop_server, users))
    assert not [u for u in users if fhub.container(u) is not None]
    routes = fhub.proxy_routes()
    assert not [u for u in users if f"/user/{u}" in routes]


def _try_spawn(hub, user):
    try:
        hub.spawn(user, options={"profile": "cpu"}, timeout=240)
        return True
    except AssertionError as e:
        return str(e)[:300]


def test_engine_unreachable_at_hub_start_forgets_no_server(fhub):
    fhub.spawn("steady")
    fhub.stop()
    good_env = fhub.env
    fhub.env = {**good_env, "DOCKER_HOST": "unix:///tmp/devdock-no-engine-here.sock"}
    try:
        fhub.start()
        server = fhub.user_model("steady")["servers"].get("")
        assert server and server["ready"], server  # not forgotten
        assert "the Docker engine does not answer" in fhub.log_tail(200)
    finally:
        fhub.stop()
        fhub.env = good_env
    fhub.start()
    fhub.wait_ready("steady")
    token = fhub.token("steady")
    r = requests.get(fhub.server_url("steady") + "api/status", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200
    fhub.stop_server("steady")


def _ghost(docker_client, hub, name: str, gpu: str, running: bool = True):
    """What a hub that crashed in the middle of a spawn, or a hub given a new database, leaves behind: a
    labelled container holding a GPU, that this hub's database does not know as running."""
    labels = {
        "io.devdock.managed": "true",
        "io.devdock.owner": name,
        "io.devdock.server": "",
        "io.devdock.hub": hub.env["DEVDOCK_HUB_ID"],
        "io.devdock.gpus": gpu,
        harness.RUN_LABEL: harness.RUN_ID,
    }
    command = ["sleep", "infinity"] if running else ["true"]
    container = docker_client.containers.run(
        "debian:bookworm-slim", command, name=f"{PREFIX}-{name}", detach=True, labels=labels
    )
    if not running:
        container.wait(timeout=30)
    return container


def test_container_orphaned_by_a_crash_is_removed_and_frees_its_gpu(docker_client, make_hub, device_nodes):
    """With unknown_servers = "remove" (devdock 0.1's behaviour), what the database does not know is removed."""
    extra = (
        EXTRA
        + devices_mode_config(device_nodes, UUIDS)
        + ('c.DevDockSpawner.profile_list = [{"slug": "both", "display_name": "Both GPUs", "gpus": 2}]\n')
        + 'c.DevDockSpawner.unknown_servers = "remove"\n'
    )
    hub = make_hub("orphans", start=False, extra_config=extra)
    ghost = _ghost(docker_client, hub, "ghost", UUIDS[0])
    hub.start()
    try:
        hub.spawn("survivor", options={"profile": "both"})  # needs the ghost's GPU too
        assert sorted(hub.server_state("survivor")["gpu_ids"]) == sorted(UUIDS)
        with pytest.raises(docker.errors.NotFound):
            ghost.reload()
        assert "removing orphaned container" in hub.log_tail(300)
        hub.stop_server("survivor")
    finally:
        hub.stop()


def test_running_container_the_database_does_not_know_is_kept_with_its_gpu(docker_client, make_hub, device_nodes):
    """The default: a running server unknown to the database (a new or restored database) is never removed."""
    profiles = [{"slug": "one", "display_name": "1 GPU", "gpus": 1}, {"slug": "both", "display_name": "2", "gpus": 2}]
    extra = EXTRA + devices_mode_config(device_nodes, UUIDS) + f"c.DevDockSpawner.profile_list = {profiles!r}\n"
    hub = make_hub("unknown", start=False, extra_config=extra, DEVDOCK_GPU_QUEUE="0")  # held GPUs: refused, not queued
    ghost = _ghost(docker_client, hub, "ghost", UUIDS[0])
    exited = _ghost(docker_client, hub, "exited", UUIDS[1], running=False)
    hub.start()
    try:
        hub.spawn("survivor", options={"profile": "one"})
        assert hub.server_state("survivor")["gpu_ids"] == [UUIDS[1]]  # the ghost's GPU stays the ghost's
        ghost.reload()
        assert ghost.status == "running"
        with pytest.raises(docker.errors.NotFound):  # a container that does not run holds nothing: removed
            exited.reload()
        log = hub.log_tail(300)
        assert "runs but this hub's database does not know it" in log and f"{PREFIX}-ghost" in log
        refused = (
            hub.api("POST", "/users/greedy/server", json={"profile": "both"})
            if hub.create_user("greedy") is None
            else None
        )
        assert refused.status_code == 409, refused.text
        page = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/admin", timeout=30).text
        assert 'id="devdock-unknown"' in page and f"{PREFIX}-ghost" in page
        hub.stop_server("survivor")
    finally:
        hub.stop()

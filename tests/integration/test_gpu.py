"""GPUs on the real engine: exact DeviceRequests, clear failures, disjoint allotments, restart safety.

This engine has no GPU. Two hubs show the two halves of the real path:
- ``nvidia`` mode with a configured 2-GPU inventory: the container is created with exactly the expected
  ``HostConfig.DeviceRequests`` and its start fails with devdock's sentence, not Docker's error;
- ``devices`` mode with stand-in device nodes (character devices made by the test, one per "GPU"):
  containers really start, each sees only its own node, and allocation, labels, state, hub restart and
  refusal work end to end. On a GPU host the nodes are /dev/nvidia<N> (see docs/gpu.md).
"""

from __future__ import annotations

import concurrent.futures
import os
import re

import pytest

from tests.harness import devices_mode_config, xsrf_from

UUIDS = ["GPU-11111111-aaaa-bbbb-cccc-000000000000", "GPU-22222222-aaaa-bbbb-cccc-000000000000"]
PROFILES = """
c.DevDockSpawner.profile_list = [
    {"slug": "cpu", "display_name": "Desktop", "default": True},
    {"slug": "gpu-1", "display_name": "One GPU", "gpus": 1},
    {"slug": "gpu-2", "display_name": "Two GPUs", "gpus": 2},
]
"""


def inventory() -> str:
    entries = [{"index": i, "uuid": uuid, "name": "Test GPU", "memory_mib": 1024} for i, uuid in enumerate(UUIDS)]
    return f"c.DevDockSpawner.gpu_inventory = {entries!r}\n"


@pytest.fixture(scope="module")
def nvidia_hub(make_hub):
    extra = (
        PROFILES
        + inventory()
        + 'c.DevDockSpawner.gpu_mode = "nvidia"\nc.DevDockSpawner.keep_failed_containers = True\n'
    )
    return make_hub("gpu-nvidia", extra_config=extra)


@pytest.fixture(scope="module")
def devices_hub(make_hub, device_nodes):
    # Full GPUs are refused on this hub (gpu_queue off); waiting in line: tests/e2e/test_gpu_queue_journey.py.
    return make_hub(
        "gpu-devices", extra_config=PROFILES + devices_mode_config(device_nodes, UUIDS), DEVDOCK_GPU_QUEUE="0"
    )


def test_gpu_profile_creates_exact_device_request_and_fails_clearly_without_a_gpu_runtime(nvidia_hub):
    hub = nvidia_hub
    hub.create_user("gina")
    r = hub.api("POST", "/users/gina/server", json={"profile": "gpu-1"})
    assert r.status_code == 503, r.text
    message = r.json()["message"]
    assert "cannot give containers GPUs" in message and "NVIDIA container toolkit" in message
    assert "could not select device driver" not in message
    # and the hub said at start-up what this engine can do
    version = hub.client.version()["Version"]
    assert f"[devdock] GPU support on this Docker engine: Docker {version}: gpu_mode " in hub.log_tail(400)

    container = hub.container("gina")  # kept for inspection by keep_failed_containers
    requests_ = container.attrs["HostConfig"]["DeviceRequests"]
    assert requests_ == [
        {
            "Driver": "nvidia",
            "Count": 0,
            "DeviceIDs": [UUIDS[0]],
            "Capabilities": [["gpu", "compute", "utility", "graphics", "video"]],
            "Options": {},
        }
    ]
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == UUIDS[0]
    assert container.labels["io.devdock.gpus"] == UUIDS[0]
    # The failed start gave the GPU back: both are free for the next request.
    assert hub.metric("devdock_gpus_allocated") == 0
    assert hub.metric("devdock_gpus_total") == 2


def test_cpu_profile_still_starts_on_a_host_without_gpu_runtime(nvidia_hub):
    nvidia_hub.spawn("gina", options={"profile": "cpu"})
    container = nvidia_hub.container("gina")
    assert container.attrs["HostConfig"]["DeviceRequests"] in (None, [])
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    nvidia_hub.stop_server("gina")


def _devices_in(container, nodes: list[str]) -> set[str]:
    """Which of the stand-in GPU device nodes exist inside the container."""
    script = "; ".join(f"test -c {n} && echo {os.path.basename(n)}" for n in nodes) + "; true"
    return set(container.exec_run(["sh", "-c", script]).output.decode().split())


def test_two_concurrent_spawns_get_disjoint_gpus_and_a_third_is_refused(devices_hub, device_nodes):
    hub = devices_hub
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda u: hub.spawn(u, options={"profile": "gpu-1"}), ["gpu-a", "gpu-b"]))
    a, b = (hub.server_state(u)["gpu_ids"] for u in ("gpu-a", "gpu-b"))
    assert len(a) == len(b) == 1 and set(a) | set(b) == set(UUIDS)
    # Each container has its own GPU's device node and not the other's.
    for user, held in (("gpu-a", a), ("gpu-b", b)):
        container = hub.container(user)
        index = UUIDS.index(held[0])
        assert _devices_in(container, device_nodes) == {f"nvidia{index}"}
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["CUDA_VISIBLE_DEVICES"] == held[0]
    assert hub.metric("devdock_gpus_allocated") == 2

    hub.create_user("gpu-c")
    r = hub.api("POST", "/users/gpu-c/server", json={"profile": "gpu-1"})
    assert r.status_code == 409
    # The refusal says how many are free, and names nobody (admins see the holders on their page).
    assert "only 0 of 2" in r.json()["message"] and "gpu-a" not in r.json()["message"]
    assert hub.container("gpu-c") is None  # nothing was created


def test_after_a_hub_restart_the_allotment_is_the_same_and_still_exclusive(devices_hub):
    hub = devices_hub
    before = {u: hub.server_state(u)["gpu_ids"] for u in ("gpu-a", "gpu-b")}
    hub.restart()
    for user in before:
        hub.wait_ready(user)
        assert hub.server_state(user)["gpu_ids"] == before[user]
    r = hub.api("POST", "/users/gpu-c/server", json={"profile": "gpu-1"})
    assert r.status_code == 409
    # Stopping a holder frees its GPU for the next user.
    hub.stop_server("gpu-a")
    hub.spawn("gpu-c", options={"profile": "gpu-1"})
    assert hub.server_state("gpu-c")["gpu_ids"] == before["gpu-a"]


def test_spawn_form_shows_free_gpus_and_greys_out_what_cannot_start(devices_hub):
    hub = devices_hub  # gpu-b and gpu-c hold both GPUs now
    session = hub.browser_session("gpu-d")
    page = session.get(f"{hub.url}/hub/spawn/gpu-d", timeout=30).text
    assert "0 of 2 free" in page
    one = re.search(r'<input[^>]*id="profile-gpu-1"[^>]*>', page).group(0)
    cpu = re.search(r'<input[^>]*id="profile-cpu"[^>]*>', page).group(0)
    assert "disabled" in one and "disabled" not in cpu and "checked" in cpu
    assert "Not enough free GPUs right now" in page
    # The form posts a profile; a forged post for a full profile is refused the same way as REST.
    r = session.post(f"{hub.url}/hub/spawn/gpu-d", data={"profile": "gpu-1", "_xsrf": xsrf_from(page)}, timeout=60)
    assert "only 0 of 2" in r.text
    assert hub.container("gpu-d") is None


def test_admins_see_who_holds_which_gpu(devices_hub):
    hub = devices_hub
    page = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/admin", timeout=30).text
    row = re.search(r'<tr data-user="gpu-b" data-server="\(default\)">(.*?)</tr>', page, re.S).group(1)
    assert hub.server_state("gpu-b")["gpu_ids"][0] in row
    for user in ("gpu-b", "gpu-c"):
        hub.stop_server(user)
    assert hub.metric("devdock_gpus_allocated") == 0


def test_one_person_holds_at_most_the_gpu_cap_across_their_servers(devices_hub):
    """devdock's config caps GPUs per person at 2 (DEVDOCK_GPU_PER_USER): named servers do not get around it."""
    hub = devices_hub
    hub.spawn("capper", options={"profile": "gpu-1"})
    r = hub.api("POST", "/users/capper/servers/more", json={"profile": "gpu-2"})
    assert r.status_code == 409, r.text
    message = r.json()["message"]
    assert "You already hold 1 GPU in your other servers" in message and "at most 2 per person" in message
    assert hub.container("capper", "more") is None
    # The form says so before anyone clicks: gpu-2 is greyed out for the cap, gpu-1 is still open.
    page = hub.browser_session("capper").get(f"{hub.url}/hub/spawn/capper/more", timeout=30).text
    two = re.search(r'<input[^>]*id="profile-gpu-2"[^>]*>', page).group(0)
    one = re.search(r'<input[^>]*id="profile-gpu-1"[^>]*>', page).group(0)
    assert "disabled" in two and "disabled" not in one
    assert "At most 2 GPUs per person, across your servers." in page
    # Positive control: within the cap, the second server starts (1 + 1 GPUs); nobody else is affected.
    hub.spawn("capper", "more", options={"profile": "gpu-1"})
    assert len(hub.server_state("capper", "more")["gpu_ids"]) == 1
    hub.stop_server("capper", "more")
    hub.stop_server("capper")

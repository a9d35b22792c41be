"""GPUs after the allotment, on the real engine and hub: use per server, health, MIG slices, no GPU by the back door.

This engine has no GPU, so the GPU itself is a stand-in: device nodes the test makes (as in test_gpu.py), a CDI
spec that names them (as in test_cdi.py), and an ``nvidia-smi`` script that prints what the test writes in
nvidia-smi's own CSV. Everything else is real: the hub reads that output on the host, finds each GPU process's
container through the real ``/proc/<pid>/cgroup`` of a process the test runs in a real server, reads XIDs from
the real kernel log (the test writes the driver's line to ``/dev/kmsg``), and the admin page, the user's page,
``/hub/metrics``, the allocator and the REST API answer from that. docs/gpu.md says what a real GPU check found
(none was lent to this project).
"""

from __future__ import annotations

import html
import io
import os
import re
import tarfile
import time

import pytest

from tests.harness import RUN_ID, StandInGPUs, cdi_hub, host_pid_of, xsrf_from

UUIDS = [f"GPU-mon{RUN_ID}-0000-0000-0000-00000000000{i}" for i in range(2)]
PROFILES = [
    {"slug": "cpu", "display_name": "Desktop", "default": True},
    {"slug": "gpu-1", "display_name": "One GPU", "gpus": 1},
    {
        "slug": "cuda-image",
        "display_name": "CUDA-style image",
        "overrides": {"image": f"devdock-test/cuda-env:{RUN_ID}"},
    },
]


@pytest.fixture(scope="module")
def cuda_env_image(docker_client):
    """An image that sets NVIDIA_VISIBLE_DEVICES=all, as NVIDIA's CUDA base images do."""
    dockerfile = b"FROM devdock/desktop:latest\nENV NVIDIA_VISIBLE_DEVICES=all CUDA_VISIBLE_DEVICES=0,1\n"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    tag = f"devdock-test/cuda-env:{RUN_ID}"
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def monitored(make_hub, tmp_path_factory, device_nodes, cuda_env_image):
    gpus = StandInGPUs(tmp_path_factory.mktemp("stand-in-smi"), UUIDS)
    extra = gpus.hub_config(device_nodes, PROFILES)
    # A GPU out of the pool makes a start refused here (gpu_queue off), not wait in line.
    return make_hub("gpu-health", extra_config=extra, DEVDOCK_GPU_QUEUE="0"), gpus


def _admin_row(hub, session, user: str) -> str:
    page = session.get(f"{hub.url}/hub/devdock/admin", timeout=30).text
    found = re.search(rf'<tr data-user="{re.escape(user)}" data-server="\(default\)">(.*?)</tr>', page, re.S)
    assert found, f"no row for {user} on the admin page"
    return found.group(1)


def _gpu_row(hub, session, uuid: str) -> str:
    page = session.get(f"{hub.url}/hub/devdock/admin", timeout=30).text
    found = re.search(rf'<tr data-uuid="{re.escape(uuid)}"[^>]*>(.*?)</tr>', page, re.S)
    assert found, f"no row for GPU {uuid} on the admin page"
    return re.sub(r"\s+", " ", found.group(1))


def _until(check, timeout: float = 30, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.5)


def _ann_with_a_gpu(hub) -> str:
    """mon-ann's server, running with one GPU (each test may run alone); returns the GPU's UUID."""
    hub.create_user("mon-ann")
    if not hub.server_state("mon-ann").get("gpu_ids"):
        hub.stop_server("mon-ann")
        hub.spawn("mon-ann", options={"profile": "gpu-1"})
    (held,) = hub.server_state("mon-ann")["gpu_ids"]
    return held


def _last_activity(hub, user: str) -> str:
    return hub.api("GET", f"/users/{user}").json()["servers"][""]["last_activity"]


def test_gpu_use_is_read_on_the_host_and_each_process_counts_for_its_own_server(monitored):
    hub, gpus = monitored
    hub.spawn("mon-ann", options={"profile": "gpu-1"})
    hub.spawn("mon-bob", options={"profile": "cpu"})
    (held,) = hub.server_state("mon-ann")["gpu_ids"]
    ann, bob = hub.container("mon-ann"), hub.container("mon-bob")
    ann_pid, bob_pid = host_pid_of(ann, "6001"), host_pid_of(bob, "6002")
    # ann's process holds 3 GiB on her GPU; a process in bob's container 1 GiB (attributed by its cgroup, not by
    # who holds the GPU); the test's own process, outside any container, 512 MiB: nobody's.
    gpus.apps([(held, ann_pid, 3072), (held, bob_pid, 1024), (held, os.getpid(), 512)])
    index = UUIDS.index(held)
    gpus.gpus(util=tuple(87 if i == index else 0 for i in range(2)), used=(4608, 0) if index == 0 else (0, 4608))
    admin = hub.browser_session("admin")
    _until(lambda: "3.0 GiB, 87 % busy" in _admin_row(hub, admin, "mon-ann"), what="ann's GPU use on the admin page")
    bob_row = _admin_row(hub, admin, "mon-bob")
    assert re.search(r'class="gpu-use">1\.0 GiB</td>', bob_row), bob_row  # bob holds no GPU: no utilisation
    assert hub.metric('devdock_server_gpu_memory_bytes{server="",user="mon-ann"}') == 3 << 30
    assert hub.metric('devdock_server_gpu_utilization_percent{server="",user="mon-ann"}') == 87
    assert hub.metric(f'devdock_gpu_utilization_percent{{gpu="{held}"}}') == 87
    # ann sees her own use on her home page; bob does not see ann's
    home = re.sub(r"\s+", " ", hub.browser_session("mon-ann").get(f"{hub.url}/hub/home", timeout=30).text)
    assert "Your programs hold 3.0 GiB of GPU memory, and the GPU is 87 % busy" in home
    assert "87 % busy" not in hub.browser_session("mon-bob").get(f"{hub.url}/hub/home", timeout=30).text
    row = _gpu_row(hub, admin, held)
    assert "mon-ann" in row and "87 %" in row and "4.5 GiB of 16.0 GiB" in row and "healthy" in row


def test_gpu_busy_counts_as_activity_for_the_idle_culler(monitored):
    hub, gpus = monitored
    held = _ann_with_a_gpu(hub)
    index = UUIDS.index(held)
    # Control first: an idle GPU (0 %) does not move the server's last activity.
    gpus.gpus(util=(0, 0))
    time.sleep(3)
    before = _last_activity(hub, "mon-ann")
    time.sleep(3)
    assert _last_activity(hub, "mon-ann") == before
    # A busy one (a training run while nobody types) does, round after round.
    gpus.gpus(util=tuple(95 if i == index else 0 for i in range(2)))
    moved = _until(lambda: _last_activity(hub, "mon-ann") != before and _last_activity(hub, "mon-ann"), 15,
                   "last_activity moved by a busy GPU")  # fmt: skip
    assert moved > before
    gpus.gpus(util=(0, 0))


def test_gpu_health_ecc_errors_take_a_gpu_out_of_the_pool_until_an_admin_clears_it(monitored):
    hub, gpus = monitored
    held = _ann_with_a_gpu(hub)
    other = next(u for u in UUIDS if u != held)
    admin = hub.browser_session("admin")
    gpus.gpus(ecc=tuple(2 if u == other else 0 for u in UUIDS))
    row = _until(lambda: "Out of the pool" in (r := _gpu_row(hub, admin, other)) and r, what="the ECC errors flagged")
    assert "2 uncorrectable ECC errors" in row
    assert hub.metric(f'devdock_gpu_unhealthy{{gpu="{other}",reason="2 uncorrectable ECC errors"}}') == 1
    hub.create_user("mon-carl")
    r = hub.api("POST", "/users/mon-carl/server", json={"profile": "gpu-1"})
    assert r.status_code == 409 and "1 out of service for errors" in r.json()["message"], r.text
    assert "GPU errors" not in hub.browser_session("mon-ann").get(f"{hub.url}/hub/home", timeout=30).text
    # The admin clears it (the form next to it): at the next reading it is back, its 2 errors accepted.
    page = admin.get(f"{hub.url}/hub/devdock/admin", timeout=30).text
    cleared = admin.post(
        f"{hub.url}/hub/devdock/admin", data={"_xsrf": xsrf_from(page), "clear_gpu": other}, timeout=30
    )
    assert cleared.status_code == 200, cleared.text
    _until(lambda: "healthy" in _gpu_row(hub, admin, other), what="the cleared GPU back in the pool")
    hub.spawn("mon-carl", options={"profile": "gpu-1"})
    assert hub.server_state("mon-carl")["gpu_ids"] == [other]
    hub.stop_server("mon-carl")
    junk = admin.post(f"{hub.url}/hub/devdock/admin", data={"_xsrf": xsrf_from(page), "clear_gpu": "GPU-x"}, timeout=30)
    assert junk.status_code == 400 and "no GPU 'GPU-x'" in html.unescape(junk.text)
    # Only admins may clear.
    user = hub.browser_session("mon-bob")
    mine = user.get(f"{hub.url}/hub/home", timeout=30).text
    denied = user.post(f"{hub.url}/hub/devdock/admin", data={"_xsrf": xsrf_from(mine), "clear_gpu": other}, timeout=30)
    assert denied.status_code == 403


def test_gpu_health_xid_in_the_kernel_log_flags_the_gpu_and_tells_its_user(monitored):
    hub, gpus = monitored
    held = _ann_with_a_gpu(hub)
    other = next(u for u in UUIDS if u != held)
    admin = hub.browser_session("admin")
    _until(lambda: "healthy" in _gpu_row(hub, admin, held), what="a first reading")
    # An application's XID (13) on the other GPU says nothing about it (the control); XID 79 on ann's does.
    gpus.xid(UUIDS.index(other), 13, "Graphics SM Warp Exception")
    gpus.xid(UUIDS.index(held), 79, "GPU has fallen off the bus.")
    row = _until(lambda: "Out of the pool" in (r := _gpu_row(hub, admin, held)) and r, what="the XID flagged")
    assert "XID 79: GPU has fallen off the bus." in row
    assert "healthy" in _gpu_row(hub, admin, other)
    home = re.sub(r"\s+", " ", hub.browser_session("mon-ann").get(f"{hub.url}/hub/home", timeout=30).text)
    assert "reported errors (XID 79: GPU has fallen off the bus.)" in home and "restart the server" in home
    assert "the NVIDIA driver reports XID 79" in hub.log_tail(400)
    page = admin.get(f"{hub.url}/hub/devdock/admin", timeout=30).text
    admin.post(f"{hub.url}/hub/devdock/admin", data={"_xsrf": xsrf_from(page), "clear_gpu": held}, timeout=30)
    _until(lambda: "healthy" in _gpu_row(hub, admin, held), what="the cleared GPU back")


def test_gpu_monitor_failing_is_said_and_the_hub_keeps_working(monitored):
    hub, gpus = monitored
    admin = hub.browser_session("admin")
    gpus.broken(True)
    try:
        page = _until(lambda: "not read" in (p := admin.get(f"{hub.url}/hub/devdock/admin", timeout=30).text) and p,
                      what="the monitor's failure on the admin page")  # fmt: skip
        assert "Driver/library version mismatch" in page
        hub.spawn("mon-dee", options={"profile": "cpu"})  # servers start as before
        hub.stop_server("mon-dee")
    finally:
        gpus.broken(False)
    _until(lambda: "not read" not in admin.get(f"{hub.url}/hub/devdock/admin", timeout=30).text, what="read again")


def test_no_gpu_by_the_back_door_of_an_image_environment_or_mknod(monitored, device_nodes):
    hub, _ = monitored
    hub.spawn("mon-eve", options={"profile": "cuda-image"})
    container = hub.container("mon-eve")
    assert container.attrs["Config"]["Image"].startswith("devdock-test/cuda-env")
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"  # the image's "all" does not reach the NVIDIA runtime
    script = (
        "; ".join(f"test -e {n} && echo {os.path.basename(n)}" for n in device_nodes) + "; ls /dev | grep nvidia; true"
    )
    assert container.exec_run(["sh", "-c", script]).output.decode().split() == []
    # Nobody in the container can make a node for a GPU (195 is NVIDIA's major number): not its user, not even
    # root there (no CAP_MKNOD; the device cgroup would refuse to open it anyway).
    mknod = "import os, stat; os.mknod('/tmp/gpu', stat.S_IFCHR | 0o666, os.makedev(195, 0))"
    for user in ("1000", "0"):
        out = container.exec_run(["python3", "-c", mknod], user=user)
        assert out.exit_code != 0 and b"Operation not permitted" in out.output, (user, out.output)
    # The control: a server with a GPU has its node (the same check that found none above).
    held = _ann_with_a_gpu(hub)
    found = hub.container("mon-ann").exec_run(["sh", "-c", script]).output.decode().split()
    assert found == [os.path.basename(device_nodes[UUIDS.index(held)])], found
    hub.stop_server("mon-eve")


MIG_UUIDS = [f"MIG-mig{RUN_ID}-0000-0000-0000-00000000000{i}" for i in range(2)]
PARENT = f"GPU-mig{RUN_ID}-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def mig_hub(docker_client, tmp_path_factory, device_nodes):
    """CDI names a GPU in MIG mode and its two 1g.18gb instances, each instance its own stand-in node."""
    spec = {
        "cdiVersion": "0.6.0",
        "kind": "nvidia.com/gpu",
        "devices": [
            {"name": uuid, "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia-mig{i}", "hostPath": node}]}}
            for i, (uuid, node) in enumerate(zip(MIG_UUIDS, device_nodes, strict=True))
        ]
        + [
            {"name": PARENT, "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0", "hostPath": device_nodes[0]}]}}
        ],
        "containerEdits": {},
    }
    inventory = [{"index": 0, "uuid": PARENT, "name": "Stand-in H200"}] + [
        {"index": 0, "uuid": u, "parent": PARENT, "mig_profile": "1g.18gb", "mig_device": i}
        for i, u in enumerate(MIG_UUIDS)
    ]
    profiles = [
        {"slug": "cpu", "display_name": "Desktop", "default": True},
        {"slug": "slice", "display_name": "A GPU slice", "gpus": 1, "mig": "1g.18gb"},
        {"slug": "whole", "display_name": "A whole GPU", "gpus": 1},
    ]
    folder = tmp_path_factory.mktemp("mig")
    with cdi_hub(docker_client, folder, f"devdock-test-mig-{RUN_ID}", spec, inventory, profiles) as hub:
        yield hub


def test_mig_slice_is_its_own_device_and_its_gpu_is_not_given_whole_meanwhile(mig_hub):
    hub = mig_hub
    hub.spawn("mig-ann", options={"profile": "slice"})
    (slice_,) = hub.server_state("mig-ann")["gpu_ids"]
    container = hub.container("mig-ann")
    assert container.attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [f"nvidia.com/gpu={slice_}"]
    devices = container.exec_run(["sh", "-c", "ls /dev | grep '^nvidia'"]).output.decode().split()
    assert devices == [f"nvidia-mig{MIG_UUIDS.index(slice_)}"]  # its own instance's node, not the GPU's
    # The form counts free/total per kind; the whole GPU cannot start while a slice of it is held.
    hub.create_user("mig-bob")
    form = re.sub(r"\s+", " ", hub.browser_session("mig-bob").get(f"{hub.url}/hub/spawn", timeout=30).text)
    assert "MIG 1g.18gb GPU slices on this server: <strong>1 of 2 free</strong>" in form
    assert "GPUs on this server: <strong>0 of 1 free</strong>" in form
    r = hub.api("POST", "/users/mig-bob/server", json={"profile": "whole"})
    assert r.status_code == 409 and "only 0 of 1" in r.json()["message"], r.text
    hub.spawn("mig-bob", options={"profile": "slice"})  # the other slice still goes
    assert hub.server_state("mig-bob")["gpu_ids"] != [slice_]
    hub.stop_server("mig-ann")
    hub.stop_server("mig-bob")
    # Both slices free: the GPU goes whole, and then no slice can be had.
    hub.spawn("mig-ann", options={"profile": "whole"})
    assert hub.server_state("mig-ann")["gpu_ids"] == [PARENT]
    r = hub.api("POST", "/users/mig-bob/server", json={"profile": "slice"})
    assert r.status_code == 409 and "only 0 of 2" in r.json()["message"], r.text
    assert hub.metric('devdock_mig_instances_total{profile="1g.18gb"}') == 2
    hub.stop_server("mig-ann")

"""gpu_mode = "cdi" on a CDI-enabled engine (Docker >= 25, as scripts/engine.sh starts it): the engine injects the
devices a CDI spec describes. The spec here describes stand-in device nodes (as the devices-mode tests use) under
NVIDIA's kind and the UUIDs of the inventory, as `nvidia-ctk cdi generate` would for real GPUs."""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.harness import RUN_ID, cdi_spec

UUIDS = [f"GPU-cdi{RUN_ID}-0000-0000-0000-00000000000{i}" for i in range(2)]


@pytest.fixture(scope="module")
def cdi_hub(docker_client, make_hub, device_nodes):
    info = docker_client.info()
    assert info.get("CDISpecDirs"), f"CDI is off on this engine (Docker {info.get('ServerVersion')})"
    spec = {
        "cdiVersion": "0.6.0",
        "kind": "nvidia.com/gpu",
        "devices": [
            {
                "name": uuid,
                "containerEdits": {
                    "deviceNodes": [{"path": f"/dev/nvidia{i}", "hostPath": node}],
                    "env": [f"DEVDOCK_TEST_CDI_DEVICE={uuid}"],
                },
            }
            for i, (uuid, node) in enumerate(zip(UUIDS, device_nodes, strict=True))
        ],
        "containerEdits": {},
    }
    inventory = [{"index": i, "uuid": uuid, "name": "Stand-in GPU"} for i, uuid in enumerate(UUIDS)]
    extra = (
        f"c.DevDockSpawner.gpu_inventory = {inventory!r}\n"
        'c.DevDockSpawner.gpu_mode = "cdi"\n'
        'c.DevDockSpawner.profile_list = [{"slug": "gpu", "display_name": "1 GPU", "gpus": 1, "default": True}]\n'
        "c.DevDockSpawner.gpu_queue = False\n"  # full GPUs are refused (waiting in line: test_gpu_queue_journey.py)
    )
    with cdi_spec(f"devdock-test-{RUN_ID}", spec):
        hub = make_hub("cdi", extra_config=extra)
        yield hub
        hub.stop()  # before its spec goes


def test_cdi_two_servers_get_their_own_device_and_a_third_is_refused(cdi_hub):
    hub = cdi_hub
    users = ["cdi-a", "cdi-b"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(hub.spawn, users))
    held = {}
    for user in users:
        container = hub.container(user)
        requests_ = container.attrs["HostConfig"]["DeviceRequests"]
        (uuid,) = hub.server_state(user)["gpu_ids"]
        assert requests_[0]["Driver"] == "cdi" and requests_[0]["DeviceIDs"] == [f"nvidia.com/gpu={uuid}"]
        # Inside: exactly the device of this server's GPU (the engine injected it from the spec), nothing else.
        # (The spec's env edit reaches the container's processes, not docker exec: read PID 1's environment.)
        script = (
            "ls /dev | grep '^nvidia'; tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^DEVDOCK_TEST_CDI_DEVICE=/env=/p'"
        )
        out = container.exec_run(["sh", "-c", script])
        lines = out.output.decode().split()
        index = UUIDS.index(uuid)
        assert lines == [f"nvidia{index}", f"env={uuid}"], lines
        held[user] = uuid
    assert sorted(held.values()) == sorted(UUIDS)
    hub.create_user("cdi-c")
    r = hub.api("POST", "/users/cdi-c/server")
    assert r.status_code == 409 and "only 0 of 2" in r.json()["message"], r.text
    assert hub.container("cdi-c") is None
    for user in users:
        hub.stop_server(user)


def test_cdi_engine_report_names_the_version_and_the_cdi_mode(cdi_hub):
    log = cdi_hub.log_tail(400)
    version = cdi_hub.client.version()["Version"]
    assert f"GPU support on this Docker engine: Docker {version}: gpu_mode 'cdi', 'devices' supported" in log

"""GPU allocation, request building and reconciliation (tables, no engine)."""

from __future__ import annotations

import concurrent.futures

import pytest

from devdock_spawner.gpu import (
    GPU,
    GPUAllocator,
    NotEnoughGPUs,
    device_config,
    engine_gpu_support,
    gpus_from_containers,
    parse_nvidia_smi,
)

INVENTORY = [GPU(i, f"GPU-{i:04d}", "A100", 81920) for i in range(4)]


def allocator(max_users=1, inventory=INVENTORY):
    return GPUAllocator(inventory, max_users)


# (id, max users per gpu, [(key, count, pinned, expected uuids or error substring)])
SCENARIOS = [
    ("exclusive", 1, [("a", 1, None, ["GPU-0000"]), ("b", 2, None, ["GPU-0001", "GPU-0002"])]),
    ("all", 1, [("a", "all", None, ["GPU-0000", "GPU-0001", "GPU-0002", "GPU-0003"]), ("b", 1, None, "0 of 4")]),
    ("none", 1, [("a", 0, None, []), ("b", 4, None, [f"GPU-{i:04d}" for i in range(4)])]),
    ("not-enough", 1, [("a", 3, None, ["GPU-0000", "GPU-0001", "GPU-0002"]), ("b", 2, None, "only 1 of 4")]),
    ("pinned-uuid", 1, [("a", 1, ["GPU-0003"], ["GPU-0003"]), ("b", 1, ["GPU-0003"], "0 of 1")]),
    ("pinned-index", 1, [("a", 1, ["2"], ["GPU-0002"])]),
    ("pinned-unknown", 1, [("a", 1, ["GPU-9999"], "not in this host's inventory")]),
    ("pinned-all", 1, [("a", "all", ["0", "1"], ["GPU-0000", "GPU-0001"])]),
    (
        "shared-2",
        2,
        [
            ("a", 4, None, INVENTORY_UUIDS := [f"GPU-{i:04d}" for i in range(4)]),
            ("b", 4, None, INVENTORY_UUIDS),
            ("c", 1, None, "0 of 4"),
        ],
    ),
    ("shared-unlimited", 0, [(k, 4, None, [f"GPU-{i:04d}" for i in range(4)]) for k in "abcdefg"]),
    ("least-shared-first", 2, [("a", 1, None, ["GPU-0000"]), ("b", 1, None, ["GPU-0001"])]),
    ("negative", 1, [("a", -1, None, "negative")]),
    ("reuse-own", 1, [("a", 2, None, ["GPU-0000", "GPU-0001"]), ("a", 2, None, ["GPU-0000", "GPU-0001"])]),
]


@pytest.mark.parametrize(("max_users", "steps"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_allocation_table(max_users, steps):
    a = allocator(max_users)
    for key, count, pinned, expected in steps:
        if isinstance(expected, str):
            with pytest.raises(NotEnoughGPUs, match=expected):
                a.allocate(key, count, pinned)
        else:
            assert a.allocate(key, count, pinned) == expected


def test_not_enough_gpus_names_no_other_user():
    a = allocator()
    a.allocate("alice/", 4)
    with pytest.raises(NotEnoughGPUs) as refused:
        a.allocate("mallory/", 1)
    assert "0 of 4" in str(refused.value)  # positive control: this is the refusal, with its counts
    assert "alice" not in str(refused.value)


def test_no_gpus_on_the_host_is_said_plainly():
    with pytest.raises(NotEnoughGPUs, match="no GPUs"):
        allocator(inventory=[]).allocate("a", 1)
    assert allocator(inventory=[]).allocate("a", 0) == []


def test_release_frees_and_counts_follow():
    a = allocator()
    a.allocate("a", 3)
    assert (a.free(), a.allocated()) == (1, 3)
    assert not a.can_satisfy(2)
    a.release("a")
    assert (a.free(), a.allocated()) == (4, 0)
    assert a.can_satisfy(4)


def test_concurrent_allocations_never_share_an_exclusive_gpu():
    a = allocator()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: _try(a, f"user{i}"), range(64)))
    granted = [r for r in results if r]
    assert len(granted) == 4
    assert len({u for r in granted for u in r}) == 4


def _try(a, key):
    try:
        return a.allocate(key, 1)
    except NotEnoughGPUs:
        return None


def test_reconciliation_after_a_hub_restart_never_double_books():
    containers = [
        {
            "State": "running",
            "Labels": {"io.devdock.owner": "alice", "io.devdock.server": "", "io.devdock.gpus": "GPU-0001"},
        },
        {
            "State": "running",
            "Labels": {"io.devdock.owner": "bob", "io.devdock.server": "x", "io.devdock.gpus": "GPU-0000,GPU-0002"},
        },
        {
            "State": "exited",
            "Labels": {"io.devdock.owner": "carol", "io.devdock.server": "", "io.devdock.gpus": "GPU-0003"},
        },
        {"State": "running", "Labels": {"io.devdock.owner": "dave", "io.devdock.server": ""}},
    ]
    held = gpus_from_containers(containers)
    assert held == {"alice/": ["GPU-0001"], "bob/x": ["GPU-0000", "GPU-0002"]}
    a = allocator()
    for key, uuids in held.items():
        a.adopt(key, uuids)
    assert a.allocate("carol/", 1) == ["GPU-0003"]  # the exited container held nothing
    with pytest.raises(NotEnoughGPUs):
        a.allocate("erin/", 1)
    assert a.holders()["GPU-0002"] == ["bob/x"]


# (id, mode, expected device_requests, expected devices)
MODES = [
    (
        "nvidia",
        "nvidia",
        [
            {
                "Driver": "nvidia",
                "Count": 0,
                "DeviceIDs": ["GPU-0001"],
                "Capabilities": [["gpu", "compute", "utility", "graphics", "video"]],
                "Options": {},
            }
        ],
        [],
    ),
    (
        "cdi",
        "cdi",
        [{"Driver": "cdi", "Count": 0, "DeviceIDs": ["nvidia.com/gpu=GPU-0001"], "Capabilities": [], "Options": {}}],
        [],
    ),
    ("devices", "devices", [], ["/dev/nvidia1:/dev/nvidia1:rwm", "/dev/nvidiactl:/dev/nvidiactl:rwm"]),
]


@pytest.mark.parametrize(("mode", "requests", "devices"), [m[1:] for m in MODES], ids=[m[0] for m in MODES])
def test_requests_for_each_mode(mode, requests, devices):
    gpu = GPU.from_config({"index": 1, "uuid": "GPU-0001"})
    config = device_config([gpu], mode, ["/dev/nvidiactl"], "/usr/local/nvidia" if mode == "devices" else "")
    assert [dict(r) for r in config["device_requests"]] == requests
    assert config["devices"] == devices
    assert config["env"]["CUDA_VISIBLE_DEVICES"] == "GPU-0001"
    assert config["env"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-0001"
    if mode == "devices":
        assert config["binds"] == {"/usr/local/nvidia": {"bind": "/usr/local/nvidia", "mode": "ro"}}


def test_nvidia_mode_asks_docker_for_the_graphics_and_video_capabilities_the_desktop_and_selkies_need():
    # Docker writes NVIDIA_DRIVER_CAPABILITIES from the request's capabilities after the container's environment (and
    # the toolkit takes the last one): what the request names is what the container gets.
    config = device_config([GPU.from_config({"index": 0, "uuid": "GPU-0"})], "nvidia")
    (request,) = config["device_requests"]
    driver_caps = set(request["Capabilities"][0]) - {"gpu"}
    assert {"graphics", "video", "compute", "utility"} <= driver_caps  # OpenGL on the GPU, NVENC, CUDA, nvidia-smi
    assert set(config["env"]["NVIDIA_DRIVER_CAPABILITIES"].split(",")) == driver_caps  # the two never disagree


def test_requests_are_fresh_objects_each_time():
    gpu = GPU.from_config({"index": 0, "uuid": "GPU-0"})
    first = device_config([gpu], "nvidia")
    first["device_requests"][0]["DeviceIDs"].append("GPU-LEAK")
    assert device_config([gpu], "nvidia")["device_requests"][0]["DeviceIDs"] == ["GPU-0"]


def test_no_gpu_hides_every_gpu():
    config = device_config([], "nvidia")
    assert config["device_requests"] == [] and config["devices"] == []
    assert config["env"] == {"NVIDIA_VISIBLE_DEVICES": "void"}


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="gpu_mode"):
        device_config([GPU(0, "x")], "magic")


def test_parse_nvidia_smi():
    out = "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559\n1, GPU-bbbb, NVIDIA H100 80GB HBM3, 81559\n\nNo devices\n"
    assert parse_nvidia_smi(out) == [
        GPU(0, "GPU-aaaa", "NVIDIA H100 80GB HBM3", 81559, "/dev/nvidia0"),
        GPU(1, "GPU-bbbb", "NVIDIA H100 80GB HBM3", 81559, "/dev/nvidia1"),
    ]


INFOS = [
    ("nvidia-runtime", {"ServerVersion": "28.2.2", "Runtimes": {"runc": {}, "nvidia": {}}}, True, False,
     ["nvidia", "devices"]),
    ("cdi", {"ServerVersion": "26.1.5", "Runtimes": {"runc": {}}, "CDISpecDirs": ["/etc/cdi"]}, False, True,
     ["cdi", "devices"]),
    ("both", {"ServerVersion": "28.0.1", "Runtimes": {"nvidia": {}}, "CDISpecDirs": ["/etc/cdi"]}, True, True,
     ["nvidia", "cdi", "devices"]),
    ("nothing", {"ServerVersion": "20.10.24", "Runtimes": {"runc": {}}}, False, False, ["devices"]),
]  # fmt: skip


@pytest.mark.parametrize(("info", "nvidia", "cdi", "modes"), [i[1:] for i in INFOS], ids=[i[0] for i in INFOS])
def test_engine_support_from_docker_info(info, nvidia, cdi, modes):
    support = engine_gpu_support(info)
    assert (support["nvidia_runtime"], support["cdi"]) == (nvidia, cdi)
    assert support["modes"] == modes
    # The report at hub start names the engine's version and the modes it can serve.
    assert support["summary"].startswith(f"Docker {info['ServerVersion']}: gpu_mode ")
    assert all(repr(m) in support["summary"] for m in modes)


def test_inventory_config_is_checked():
    with pytest.raises(ValueError, match="unknown keys"):
        GPU.from_config({"index": 0, "uuid": "x", "vram": 3})
    with pytest.raises(ValueError, match="need 'index' and 'uuid'"):
        GPU.from_config({"name": "A100"})


# (id, cap per person, [(key, count, expected uuids or error words)])
CAPS = [
    ("one-server-at-the-cap", 2, [("ann/", 2, ["GPU-0000", "GPU-0001"])]),
    ("second-server-past-the-cap", 2, [("ann/", 2, ["GPU-0000", "GPU-0001"]), ("ann/big", 1, "at most 2 per person")]),
    ("others-are-not-counted", 2, [("ann/", 2, ["GPU-0000", "GPU-0001"]), ("bob/", 2, ["GPU-0002", "GPU-0003"])]),
    ("same-server-again", 2, [("ann/", 2, ["GPU-0000", "GPU-0001"]), ("ann/", 2, ["GPU-0000", "GPU-0001"])]),
    ("no-cap", 0, [("ann/", 2, ["GPU-0000", "GPU-0001"]), ("ann/x", 2, ["GPU-0002", "GPU-0003"])]),
    ("cpu-server-not-capped", 1, [("ann/", 1, ["GPU-0000"]), ("ann/cpu", 0, [])]),
    (
        "slash-in-username",
        1,
        [("a/b/", 1, ["GPU-0000"]), ("a/", 1, ["GPU-0001"]), ("a/b/x", 1, "at most 1 per person")],
    ),
]


@pytest.mark.parametrize(("cap", "steps"), [c[1:] for c in CAPS], ids=[c[0] for c in CAPS])
def test_gpus_per_person_are_capped_across_their_servers(cap, steps):
    a = allocator()
    for key, count, expected in steps:
        if isinstance(expected, str):
            with pytest.raises(NotEnoughGPUs, match=expected):
                a.allocate(key, count, per_owner=cap)
            assert a.held_by(key) == []  # nothing half-allotted
        else:
            assert a.allocate(key, count, per_owner=cap) == expected


def test_refusal_names_the_per_person_cap_before_free_gpus():
    a = allocator()
    a.allocate("ann/", 2, per_owner=2)
    assert "at most 2 per person" in a.refusal(1, key="ann/more", per_owner=2)
    assert not a.can_satisfy(1, key="ann/more", per_owner=2)
    # Controls: without the cap the same request fits, and another person is not counted against ann.
    assert a.refusal(1, key="ann/more") == ""
    assert a.can_satisfy(2, key="bob/", per_owner=2)

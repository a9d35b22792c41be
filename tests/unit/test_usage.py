"""What servers use, parsed from the engine's own reports (tables of Engine API samples)."""

from __future__ import annotations

import pytest

from devdock_spawner.usage import Usage, from_stats, human_bytes, volume_sizes

V1 = {  # cgroup v1 (Docker 20.10-26 on an older host): total_inactive_file is the reclaimable cache
    "memory_stats": {"usage": 600 << 20, "limit": 8 << 30, "stats": {"total_inactive_file": 100 << 20}},
    "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}, "system_cpu_usage": 20_000_000_000, "online_cpus": 2},
    "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}, "system_cpu_usage": 18_000_000_000},
}
V2 = {  # cgroup v2: inactive_file
    "memory_stats": {"usage": 300 << 20, "limit": 1 << 30, "stats": {"inactive_file": 44 << 20}},
    "cpu_stats": {"cpu_usage": {"total_usage": 500}, "system_cpu_usage": 1000, "online_cpus": 4},
    "precpu_stats": {"cpu_usage": {"total_usage": 500}, "system_cpu_usage": 0},
}
FIRST = {  # the first sample of a container: no precpu yet, no cache figures
    "memory_stats": {"usage": 50 << 20, "limit": 2 << 30},
    "cpu_stats": {"cpu_usage": {"total_usage": 10, "percpu_usage": [5, 5]}, "system_cpu_usage": 100},
    "precpu_stats": {},
}


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (V1, Usage(500 << 20, 8 << 30, 1.0)),  # 1 s of CPU in 2 s of two CPUs' time = one core
        (V2, Usage(256 << 20, 1 << 30, 0.0)),
        (FIRST, Usage(50 << 20, 2 << 30, 0.0)),
    ],
    ids=["cgroup-v1", "cgroup-v2-idle", "first-sample"],
)
def test_memory_and_cpu_from_docker_stats(stats, expected):
    assert from_stats(stats) == expected


def test_home_sizes_from_system_df():
    df = {"Volumes": [
        {"Name": "devdock-home-alice", "UsageData": {"Size": 123456}},
        {"Name": "not-measured", "UsageData": {"Size": -1}},
        {"Name": "no-data"},
    ]}  # fmt: skip
    assert volume_sizes(df) == {"devdock-home-alice": 123456}


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1536, "1.5 KiB"), (400 << 20, "400.0 MiB"), (8 << 30, "8.0 GiB")])
def test_bytes_in_words(n, text):
    assert human_bytes(n) == text

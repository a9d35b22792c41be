"""What each server uses of the shared box, read from the Docker engine (pure parsing; the spawner gathers).

- memory and CPU from ``docker stats`` (one sample per server and round; cgroup v1 and v2 alike);
- the home's size from ``docker system df`` (it walks the volumes, so it is read less often);
- out-of-memory kills from the engine's ``oom`` events: the kernel killed a process inside that server only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    #: CPU cores in use, averaged over the sample (1.0: one core busy)
    cpu_cores: float = 0.0


def from_stats(stats: dict) -> Usage:
    """A ``docker stats --no-stream`` sample (the Engine API's container stats with ``precpu_stats``)."""
    memory = stats.get("memory_stats") or {}
    inner = memory.get("stats") or {}
    # What the kernel could not reclaim: usage less the page cache (cgroup v1: total_inactive_file; v2: inactive_file).
    cache = inner.get("total_inactive_file", inner.get("inactive_file", 0)) or 0
    used = max(0, int(memory.get("usage", 0) or 0) - int(cache))
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0) or 0) - (
        pre.get("cpu_usage", {}).get("total_usage", 0) or 0
    )
    system_delta = (cpu.get("system_cpu_usage", 0) or 0) - (pre.get("system_cpu_usage", 0) or 0)
    cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    measured = bool(pre.get("system_cpu_usage"))  # the first sample of a container has nothing to compare with
    cores = cpu_delta / system_delta * cpus if measured and system_delta > 0 and cpu_delta > 0 else 0.0
    return Usage(memory_bytes=used, memory_limit_bytes=int(memory.get("limit", 0) or 0), cpu_cores=round(cores, 3))


def volume_sizes(df: dict) -> dict[str, int]:
    """``{volume name: bytes}`` from ``docker system df`` (the Engine API's ``/system/df``)."""
    sizes = {}
    for volume in df.get("Volumes") or []:
        size = (volume.get("UsageData") or {}).get("Size", -1)
        if size is not None and size >= 0:
            sizes[volume["Name"]] = int(size)
    return sizes


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"

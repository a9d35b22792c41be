"""Hub-wide state: what every server of one hub process shares, in one place, with a reset for tests.

JupyterHub makes one spawner object per server; some things must exist once per hub: the thread pool for
Docker calls, the GPU and SSH-port allocators (so that their locks are shared), a lock around creating the
users' network, how many servers are starting right now, and what reconciliation found at start-up. They
live here instead of in class attributes spread over the mixins (kubespawner keeps its client cache the same
way). Per-server state lives on the spawner instance.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class HubState:
    #: thread pools for Docker calls, by size (one in practice: ``docker_workers``)
    executors: dict[int, ThreadPoolExecutor] = field(default_factory=dict)
    #: SSH port allocators, by port range
    port_allocators: dict = field(default_factory=dict)
    #: host ports of other tools' stopped containers, by container id (see ports.held_ports)
    foreign_ports: dict = field(default_factory=dict)
    #: the GPU allocator, built once from the inventory and the running containers
    gpu_allocator: object = None
    #: servers of this hub between the start of ``start()`` and its end
    starting: int = 0
    #: containers of this hub that run but that the hub database does not know (new or restored database):
    #: left running, their GPUs and ports held; shown on the admin page
    unknown_containers: list = field(default_factory=list)
    #: the last out-of-memory kill inside each server: {server key: datetime}
    oom: dict = field(default_factory=dict)
    #: what each running server uses: {server key: usage.Usage}, and its home's size: {server key: bytes}
    usage: dict = field(default_factory=dict)
    home_bytes: dict = field(default_factory=dict)
    #: the size limit of homes that have one (``home_size``): {server key: bytes}
    home_limit_bytes: dict = field(default_factory=dict)
    #: what each server does on its GPUs: {server key: gpu_monitor.ServerGPUUse}; each GPU's last reading:
    #: {uuid: gpu_monitor.GPUReading}; the GPUs' health (gpu_monitor.Health) and those an admin cleared since
    gpu_use: dict = field(default_factory=dict)
    gpu_readings: dict = field(default_factory=dict)
    gpu_health: object = None
    gpu_cleared: set = field(default_factory=set)
    #: why GPU use and health cannot be read ("" while they can), said once in the log, shown to admins
    gpu_monitor_problem: str = ""
    #: the kernel log, open for XIDs (a file descriptor; None: not opened yet; -1: cannot be read)
    kernel_log: int | None = None
    #: the hub's data folder is (nearly) full: servers do not start until there is room again
    disk_full: bool = False
    #: which users keep which SSH public key, by key folder (ssh.KeyIndex: the gateway's lookups)
    ssh_key_indexes: dict = field(default_factory=dict)
    #: things done once per hub (reconciliation, Swarm's network keeper), by name
    done: set = field(default_factory=set)
    _locks: dict = field(default_factory=dict)

    def lock(self, name: str) -> asyncio.Lock:
        """A hub-wide asyncio lock, made on first use (inside the hub's event loop)."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def executor(self, workers: int) -> ThreadPoolExecutor:
        pool = self.executors.get(workers)
        if pool is None:
            pool = self.executors[workers] = ThreadPoolExecutor(workers, thread_name_prefix="devdock-docker")
        return pool


_state = HubState()


def hub_state() -> HubState:
    """The state of this hub process."""
    return _state


def reset() -> None:
    """Forget everything (tests that start several hubs' worth of spawners in one process)."""
    global _state
    for pool in _state.executors.values():
        pool.shutdown(wait=False)
    _state = HubState()

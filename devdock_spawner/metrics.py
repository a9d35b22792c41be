"""Prometheus metrics devdock adds to the Hub's ``/hub/metrics`` (JupyterHub's default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GPUS_TOTAL = Gauge("devdock_gpus_total", "GPUs in devdock's inventory")
GPUS_ALLOCATED = Gauge("devdock_gpus_allocated", "GPUs held by at least one running devdock server")
SPAWN_PHASE = Histogram(
    "devdock_spawn_phase_seconds",
    "Time spent in each phase of a devdock spawn",
    ["phase"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)


CULLS = Counter("devdock_culls", "Servers the idle culler stopped", ["kind"])
IDLE_GPU_SECONDS = Counter(
    "devdock_idle_gpu_seconds", "GPU-seconds held by servers between their last activity and their cull"
)


MIG_TOTAL = Gauge("devdock_mig_instances_total", "MIG instances in devdock's inventory", ["profile"])
MIG_ALLOCATED = Gauge("devdock_mig_instances_allocated", "MIG instances held by a running server", ["profile"])
GPU_UNHEALTHY = Gauge(
    "devdock_gpu_unhealthy",
    "1 while a GPU is out of the pool for its health (XID, ECC, off the bus)",
    ["gpu", "reason"],
)


GPU_LINE_WAITING = Gauge("devdock_gpu_line_waiting", "Starts waiting in line for GPUs, by kind", ["kind"])
GPU_LINE_WAIT = Histogram(
    "devdock_gpu_line_wait_seconds",
    "How long starts waited in line for GPUs, by how the wait ended (turn, longest wait, cancelled)",
    ["outcome"],
    buckets=(10, 60, 300, 900, 1800, 3600, 7200, 14400),
)


GPU_SECONDS_HELD = Counter(
    "devdock_gpu_seconds_held",
    "GPU-seconds held by servers whose runs ended, by their user's JupyterHub group (each group of a member; '': none)",
    ["group"],
)


def update_line_gauges(queue) -> None:
    GPU_LINE_WAITING.clear()
    for waiter in queue.waiting():
        GPU_LINE_WAITING.labels(waiter.line.partition(":")[0]).inc()


def update_gpu_gauges(allocator) -> None:
    GPUS_TOTAL.set(allocator.total)
    GPUS_ALLOCATED.set(allocator.allocated())
    for kind in allocator.kinds():
        if kind != "gpu":
            MIG_TOTAL.labels(kind).set(allocator.total_of(kind))
            MIG_ALLOCATED.labels(kind).set(allocator.allocated(kind))


SERVER_MEMORY = Gauge("devdock_server_memory_bytes", "Memory a server uses (page cache excluded)", ["user", "server"])
SERVER_MEMORY_LIMIT = Gauge("devdock_server_memory_limit_bytes", "A server's memory limit", ["user", "server"])
SERVER_CPU = Gauge("devdock_server_cpu_cores", "CPU cores a server uses (1.0: one busy core)", ["user", "server"])
SERVER_HOME = Gauge("devdock_server_home_bytes", "Size of a server's home volume", ["user", "server"])
SERVER_HOME_LIMIT = Gauge(
    "devdock_server_home_limit_bytes", "Room in a server's home with a size limit (home_size)", ["user", "server"]
)
SERVER_OOM_KILLS = Counter(
    "devdock_server_oom_kills", "Processes the kernel killed for memory in a server", ["user", "server"]
)
SERVER_GPU_MEMORY = Gauge(
    "devdock_server_gpu_memory_bytes", "GPU memory a server's processes hold (read on the host)", ["user", "server"]
)
SERVER_GPU_UTILIZATION = Gauge(
    "devdock_server_gpu_utilization_percent", "How busy a server's GPUs are (those it holds alone)", ["user", "server"]
)
GPU_UTILIZATION = Gauge("devdock_gpu_utilization_percent", "How busy a GPU is (nvidia-smi)", ["gpu"])
GPU_MEMORY_USED = Gauge("devdock_gpu_memory_used_bytes", "Memory in use on a GPU (nvidia-smi)", ["gpu"])

"""What happens on the GPUs after the allotment: use per server, and health (pure; the spawner gathers).

Read on the host, never inside a user's container (a user controls everything in there):

- ``nvidia-smi --query-gpu`` for each GPU's utilisation, memory, uncorrectable ECC errors and pending page
  retirements; a GPU it cannot read any more ("GPU is lost") fell off the bus;
- ``nvidia-smi --query-compute-apps`` for the processes on each GPU (host PIDs) and the memory each holds; a
  process's ``/proc/<pid>/cgroup`` names its container, and the container's labels its server;
- the kernel log (``/dev/kmsg``) for the driver's XID errors (``NVRM: Xid (PCI:0000:3b:00): 79, ...``).

The decisions (:func:`decide_health`) follow NVIDIA's own device plugin for Kubernetes: XIDs caused by an
application (13, 31, 43, 45, 68, 109) say nothing about the GPU; any other XID, uncorrectable ECC errors or a GPU
off the bus take it out of the pool for new servers until an admin clears it (or, for a lost GPU or pending
retirements, until it reads healthy again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: ``nvidia-smi --query-gpu`` fields, in this order.
GPU_FIELDS = (
    "uuid",
    "pci.bus_id",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "ecc.errors.uncorrected.volatile.total",
    "retired_pages.pending",
)
QUERY_GPU_ARGS = [f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"]
#: ``nvidia-smi --query-compute-apps`` fields, in this order.
APP_FIELDS = ("gpu_uuid", "pid", "used_memory")
QUERY_APPS_ARGS = [f"--query-compute-apps={','.join(APP_FIELDS)}", "--format=csv,noheader,nounits"]

#: XIDs an application causes (NVIDIA's k8s-device-plugin skips the same ones): not the GPU's fault.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})


@dataclass(frozen=True)
class GPUReading:
    uuid: str
    bus_id: str = ""
    #: percent of the last sample period the GPU was busy; None: not reported (MIG mode, or not supported)
    utilization: int | None = None
    memory_used_mib: int = 0
    memory_total_mib: int = 0
    #: uncorrectable ECC errors since the driver loaded; None: no ECC on this GPU
    ecc_uncorrected: int | None = None
    retired_pending: bool = False
    #: nvidia-smi could not read it (``[GPU is lost]``)
    lost: bool = False


def _number(value: str) -> int | None:
    value = value.strip()
    try:
        return int(float(value))
    except ValueError:
        return None  # "[N/A]", "[Not Supported]", "[GPU is lost]", "[Unknown Error]"


def normal_bus_id(value: str) -> str:
    """``0000:3b:00`` from nvidia-smi's ``00000000:3B:00.0`` and the kernel log's ``PCI:0000:3b:00``."""
    found = re.search(r"([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})", value)
    if not found:
        return ""
    return f"{found.group(1)[-4:]}:{found.group(2)}:{found.group(3)}".lower()


def parse_gpu_query(output: str) -> dict[str, GPUReading]:
    """``{uuid: GPUReading}`` from ``nvidia-smi`` with :data:`QUERY_GPU_ARGS`; lines it cannot read are skipped."""
    readings = {}
    for line in output.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(GPU_FIELDS) or not fields[0].startswith("GPU-"):
            continue
        uuid, bus, util, used, total, ecc, pending = fields
        lost = any("lost" in f.lower() for f in fields[2:])
        readings[uuid] = GPUReading(
            uuid=uuid,
            bus_id=normal_bus_id(bus),
            utilization=_number(util),
            memory_used_mib=_number(used) or 0,
            memory_total_mib=_number(total) or 0,
            ecc_uncorrected=_number(ecc),
            retired_pending=pending.strip().lower() == "yes",
            lost=lost,
        )
    return readings


@dataclass(frozen=True)
class GPUProcess:
    gpu_uuid: str
    pid: int
    memory_mib: int


def parse_compute_apps(output: str) -> list[GPUProcess]:
    """Processes on the GPUs from ``nvidia-smi`` with :data:`QUERY_APPS_ARGS` (host PIDs)."""
    processes = []
    for line in output.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(APP_FIELDS) or not fields[1].isdigit():
            continue
        processes.append(GPUProcess(fields[0], int(fields[1]), _number(fields[2]) or 0))
    return processes


_CONTAINER_IN_CGROUP = re.compile(r"(?:/docker[/-]|/docker/containers/|:/docker-)([0-9a-f]{64})(?:\.scope)?(?:/|$)")


def container_id_from_cgroup(text: str) -> str:
    """The Docker container a process runs in, from its ``/proc/<pid>/cgroup`` ("" if none).

    cgroup v2 with systemd (``0::/system.slice/docker-<id>.scope``), with cgroupfs (``0::/docker/<id>``), cgroup
    v1 (``12:memory:/docker/<id>``), and a process in a sub-cgroup of its container's.
    """
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        found = _CONTAINER_IN_CGROUP.search(path)
        if found:
            return found.group(1)
    return ""


#: A ``/dev/kmsg`` record: ``priority,sequence,timestamp,flags[,more];message`` (the kernel's
#: Documentation/ABI/testing/dev-kmsg); the message is everything after the first ``;``.
_KMSG_HEADER = re.compile(r"\d+,\d+,\d+,[^;]*;")
#: The NVIDIA driver's XID line, from the start of the message: ``NVRM: Xid (PCI:0000:3b:00): 79, ...`` (older
#: drivers leave out ``PCI:``; a function number or a MIG instance after the bus may follow). Anchored, and the
#: bus must follow at once: a kernel message that *carries* this text (a trap or segfault line names the
#: program's file, which a user chooses) does not begin with it, and one that begins with a process name (at
#: most 15 characters: ``NVRM: Xid (PCI:``) has ``[pid]`` where the bus would be.
_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})(?:\.[0-7])?(?: [^)]*)?\): (\d+),?\s*(.*)"
)


@dataclass(frozen=True)
class Xid:
    bus_id: str
    code: int
    message: str

    @property
    def is_application_error(self) -> bool:
        return self.code in APPLICATION_XIDS


def kernel_message(record: str) -> str:
    """The message of one ``/dev/kmsg`` record (its header taken off once), or the line itself if it has none."""
    record = record.split("\n", 1)[0]  # continuation lines (`` KEY=value``) follow the message
    header = _KMSG_HEADER.match(record)
    return record[header.end() :] if header else record


def parse_xid(record: str) -> Xid | None:
    """An XID from one kernel log record (``/dev/kmsg``'s ``4,1234,5678,-;NVRM: Xid (PCI:0000:3b:00): 79, ...``).

    Only a record whose message *begins* with the driver's line counts: anything else that contains it (a user's
    file name in a trap message, a program named after it) is not the driver speaking.
    """
    found = _XID.match(kernel_message(record))
    if not found:
        return None
    bus = normal_bus_id(found.group(1))
    # The rest names the process (pid=..., name=...) and what happened; keep what happened.
    message = re.sub(r"pid='?[^,]*'?,\s*name=[^,]*,\s*", "", found.group(3)).strip()
    return Xid(bus, int(found.group(2)), message[:200]) if bus else None


@dataclass
class Health:
    """What :func:`decide_health` remembers between readings (one per hub)."""

    #: uncorrectable ECC count an admin accepted when clearing a GPU: {uuid: count}
    ecc_accepted: dict[str, int] = field(default_factory=dict)
    #: XIDs that took a GPU out until an admin clears it: {uuid: reason}
    xid: dict[str, str] = field(default_factory=dict)
    #: GPUs out of the pool now: {uuid: reason}
    out: dict[str, str] = field(default_factory=dict)


def decide_health(
    health: Health,
    gpus: list[str],
    readings: dict[str, GPUReading],
    xids: list[Xid] = (),
    cleared: set[str] = frozenset(),
) -> Health:
    """The next :class:`Health` after one reading of the whole GPUs ``gpus`` (UUIDs).

    ``readings`` is empty when nothing could be read at all (no nvidia-smi): then only XIDs and admins decide,
    never "lost". ``cleared``: GPUs an admin cleared since the last reading.
    """
    by_bus = {r.bus_id: uuid for uuid, r in readings.items() if r.bus_id}
    ecc_accepted, sticky = dict(health.ecc_accepted), dict(health.xid)
    for uuid in cleared:
        sticky.pop(uuid, None)
        reading = readings.get(uuid)
        ecc_accepted[uuid] = (reading.ecc_uncorrected or 0) if reading else ecc_accepted.get(uuid, 0)
    for xid in xids:
        uuid = by_bus.get(xid.bus_id)
        if uuid in gpus and not xid.is_application_error and uuid not in cleared:
            sticky[uuid] = f"XID {xid.code}" + (f": {xid.message}" if xid.message else "")
    out = {}
    for uuid in gpus:
        reading = readings.get(uuid)
        reasons = []
        if readings and (reading is None or reading.lost):
            reasons.append("it fell off the bus (nvidia-smi cannot read it)")
        if reading is not None:
            accepted = ecc_accepted.get(uuid, 0)
            if reading.ecc_uncorrected is not None and reading.ecc_uncorrected < accepted:
                ecc_accepted[uuid] = accepted = 0  # a GPU reset zeroes the volatile counts: a fresh start
            if reading.ecc_uncorrected is not None and reading.ecc_uncorrected > accepted:
                count = reading.ecc_uncorrected - accepted
                reasons.append(f"{count} uncorrectable ECC error{'s' if count != 1 else ''}")
            if reading.retired_pending:
                reasons.append("memory pages wait for a GPU reset to be retired")
        if uuid in sticky:
            reasons.append(sticky[uuid])
        if reasons:
            out[uuid] = "; ".join(reasons)
    return Health(ecc_accepted=ecc_accepted, xid=sticky, out=out)


@dataclass(frozen=True)
class ServerGPUUse:
    """What one server does on its GPUs."""

    memory_mib: int = 0
    #: the mean utilisation of the GPUs it holds alone; None when it shares them or they do not say
    utilization: float | None = None
    processes: int = 0


def use_by_server(
    processes: list[GPUProcess],
    server_of_pid: dict[int, str],
    readings: dict[str, GPUReading],
    held: dict[str, list[str]],
    holders: dict[str, list[str]],
    parent_of: dict[str, str] | None = None,
) -> dict[str, ServerGPUUse]:
    """``{server key: ServerGPUUse}`` for every server that holds GPUs or runs processes on one.

    ``server_of_pid``: host PID → server key (from the processes' cgroups); ``held``: server key → its GPU (or MIG
    instance) UUIDs; ``holders``: UUID → server keys (to tell a GPU held alone from a shared one); ``parent_of``:
    MIG instance UUID → its GPU's UUID (MIG instances report no utilisation of their own).
    """
    parent_of = parent_of or {}
    memory: dict[str, int] = {}
    count: dict[str, int] = {}
    for p in processes:
        key = server_of_pid.get(p.pid)
        if key is None:
            continue
        memory[key] = memory.get(key, 0) + p.memory_mib
        count[key] = count.get(key, 0) + 1
    result = {}
    for key in sorted(set(held) | set(memory)):
        own = held.get(key, [])
        samples = []
        for uuid in own:
            reading = readings.get(parent_of.get(uuid, uuid))
            alone = holders.get(uuid, []) == [key] and uuid not in parent_of
            if reading is not None and reading.utilization is not None and alone:
                samples.append(reading.utilization)
        utilization = round(sum(samples) / len(samples), 1) if samples and len(samples) == len(own) else None
        result[key] = ServerGPUUse(memory.get(key, 0), utilization, count.get(key, 0))
    return result

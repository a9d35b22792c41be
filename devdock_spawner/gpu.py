"""GPUs: inventory, allocation to servers, and Docker requests for the allotted devices.

Pure apart from :func:`engine_gpu_support` and :func:`probe_inventory`, which take a docker-py client.

- **Inventory**: from configuration (wins), or found once by a probe container that runs
  ``nvidia-smi`` with every GPU (needs the NVIDIA container toolkit), cached for the hub's lifetime.
- **Allocation**: :class:`GPUAllocator` hands out specific GPU UUIDs under a lock, exclusively by
  default (``max_users_per_gpu``), and can be rebuilt from the containers' ``io.devdock.gpus`` labels
  after a hub restart, so a restart never double-books.
- **Requests**: :func:`device_config` compiles an allotment into what Docker understands, for three
  modes: ``nvidia`` (a ``DeviceRequest`` for the NVIDIA runtime), ``cdi`` (CDI device names) and
  ``devices`` (device nodes plus a read-only driver mount, for hosts without the toolkit).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from docker.types import DeviceRequest

from .naming import GPU_LABEL, MANAGED_LABEL, ROLE_LABEL, server_key_from_labels

MODES = ("nvidia", "cdi", "devices")


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    name: str = "GPU"
    memory_mib: int = 0
    #: host device node, for the ``devices`` mode
    device: str = ""

    @classmethod
    def from_config(cls, entry: dict) -> GPU:
        """One ``gpu_inventory`` entry: ``{"index": 0, "uuid": "GPU-...", "name": ..., "memory_mib": ...}``."""
        unknown = set(entry) - {"index", "uuid", "name", "memory_mib", "device"}
        if unknown:
            raise ValueError(f"unknown keys in gpu_inventory entry: {sorted(unknown)}")
        if "uuid" not in entry or "index" not in entry:
            raise ValueError(f"gpu_inventory entries need 'index' and 'uuid': {entry}")
        index = int(entry["index"])
        return cls(
            index=index,
            uuid=str(entry["uuid"]),
            name=str(entry.get("name", "GPU")),
            memory_mib=int(entry.get("memory_mib", 0)),
            device=str(entry.get("device") or f"/dev/nvidia{index}"),
        )


def parse_nvidia_smi(output: str) -> list[GPU]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`` lines."""
    gpus = []
    for line in output.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        memory = int(float(fields[3])) if fields[3].replace(".", "", 1).isdigit() else 0
        gpus.append(GPU(int(fields[0]), fields[1], fields[2], memory, f"/dev/nvidia{fields[0]}"))
    return gpus


class NotEnoughGPUs(RuntimeError):
    """The request cannot be met now; the message is meant for the user."""


class GPUAllocator:
    """Which server holds which GPU; thread-safe; one per hub."""

    def __init__(self, inventory: list[GPU], max_users_per_gpu: int = 1):
        if max_users_per_gpu < 0:
            raise ValueError("max_users_per_gpu must be >= 0 (0: no limit)")
        self.inventory = list(inventory)
        self.by_uuid = {g.uuid: g for g in self.inventory}
        self.max_users = max_users_per_gpu
        self._lock = threading.Lock()
        self._holders: dict[str, set[str]] = {g.uuid: set() for g in self.inventory}

    # --- queries -----------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return len(self.inventory)

    def _has_room(self, uuid: str, key: str) -> bool:
        holders = self._holders[uuid]
        return key in holders or self.max_users == 0 or len(holders) < self.max_users

    def free(self, key: str = "") -> int:
        """GPUs that one more server (``key``) could get now."""
        with self._lock:
            return sum(1 for g in self.inventory if self._has_room(g.uuid, key))

    def allocated(self) -> int:
        with self._lock:
            return sum(1 for holders in self._holders.values() if holders)

    def holders(self) -> dict[str, list[str]]:
        """``{uuid: [server keys]}`` for the admin page."""
        with self._lock:
            return {uuid: sorted(keys) for uuid, keys in self._holders.items()}

    def held_by(self, key: str) -> list[str]:
        with self._lock:
            return [g.uuid for g in self.inventory if key in self._holders[g.uuid]]

    def can_satisfy(self, count: int | str, pinned: list[str] | None = None, key: str = "", per_owner: int = 0) -> bool:
        return not self.refusal(count, pinned, key, per_owner)

    def refusal(self, count: int | str, pinned: list[str] | None = None, key: str = "", per_owner: int = 0) -> str:
        """Why ``allocate`` would refuse this request now, in the user's words ("" if it would not)."""
        with self._lock:
            try:
                if per_owner:
                    self._check_owner_cap(key, count, pinned, per_owner)
                self._choose(count, pinned, key)
            except NotEnoughGPUs as e:
                return str(e)
            return ""

    # --- changes -----------------------------------------------------------------------------

    def allocate(self, key: str, count: int | str, pinned: list[str] | None = None, per_owner: int = 0) -> list[str]:
        """UUIDs for ``key``: ``count`` GPUs (or ``"all"``), from ``pinned`` ones if given.

        A server asking again gets what it already holds when that still fits the request. ``per_owner`` caps
        the GPUs one person holds across all their servers (keys ``user/server``); 0: no cap.
        """
        with self._lock:
            if per_owner:
                # The cap first: with it reached, "not enough free" would tell the user the wrong thing.
                self._check_owner_cap(key, count, pinned, per_owner)
            chosen = self._choose(count, pinned, key)
            for uuid in list(self._holders):
                self._holders[uuid].discard(key)
            for uuid in chosen:
                self._holders[uuid].add(key)
            return chosen

    def release(self, key: str) -> None:
        with self._lock:
            for holders in self._holders.values():
                holders.discard(key)

    def adopt(self, key: str, uuids: list[str]) -> None:
        """Record what a running container already has (hub restart), even beyond the share limit."""
        with self._lock:
            for uuid in uuids:
                if uuid in self._holders:
                    self._holders[uuid].add(key)

    # --- internals ---------------------------------------------------------------------------

    def _check_owner_cap(self, key: str, count: int | str, pinned: list[str] | None, per_owner: int) -> None:
        pool = [g for g in self.inventory if g.uuid in pinned or str(g.index) in pinned] if pinned else self.inventory
        wanted = len(pool) if count == "all" else max(0, int(count))
        owner = key.rpartition("/")[0]
        others = {
            u for u, holders in self._holders.items() for k in holders if k != key and k.rpartition("/")[0] == owner
        }
        if wanted and len(others) + wanted > per_owner:
            held, plural = len(others), "s" if len(others) != 1 else ""
            raise NotEnoughGPUs(
                f"You already hold {held} GPU{plural} in your other servers, and this profile asks for {wanted}: at "
                f"most {per_owner} per person. Stop one of your other servers (or choose a profile with fewer GPUs) "
                "to start this one."
            )

    def _choose(self, count: int | str, pinned: list[str] | None, key: str) -> list[str]:
        """The GPUs to give ``key`` (called with the lock held); raises with a sentence for the user."""
        pool = self.inventory
        if pinned:
            unknown = [p for p in pinned if p not in self.by_uuid and not _index_in(p, self.inventory)]
            if unknown:
                raise NotEnoughGPUs(f"GPU(s) {', '.join(unknown)} are not in this host's inventory.")
            pool = [g for g in self.inventory if g.uuid in pinned or str(g.index) in pinned]
        wanted = len(pool) if count == "all" else int(count)
        if wanted < 0:
            raise NotEnoughGPUs("A negative number of GPUs cannot be requested.")
        if wanted == 0:
            return []
        if self.total == 0:
            raise NotEnoughGPUs("This server has no GPUs to hand out.")
        free = [g for g in pool if self._has_room(g.uuid, key)]
        # Prefer what this server already holds, then the least shared, then by index.
        free.sort(key=lambda g: (key not in self._holders[g.uuid], len(self._holders[g.uuid]), g.index))
        if len(free) < wanted:
            # Who holds the others is for admins (their page shows it), not for every user who asks.
            raise NotEnoughGPUs(
                f"{wanted} GPU{'s' if wanted != 1 else ''} requested, but only {len(free)} of {len(pool)} "
                f"{'is' if len(free) == 1 else 'are'} free right now. Choose a profile with fewer "
                "GPUs or try again when one is released."
            )
        return [g.uuid for g in free[:wanted]]


def _index_in(value: str, inventory: list[GPU]) -> bool:
    return any(str(g.index) == str(value) for g in inventory)


def gpus_from_containers(containers: list[dict]) -> dict[str, list[str]]:
    """``{server key: [uuids]}`` from a ``docker ps -a`` listing of devdock containers (their labels)."""
    result = {}
    for c in containers:
        labels = c.get("Labels") or {}
        key = server_key_from_labels(labels)
        if labels.get(GPU_LABEL) and key is not None and c.get("State") in ("running", "created"):
            result[key] = [u for u in labels[GPU_LABEL].split(",") if u]
    return result


def device_config(gpus: list[GPU], mode: str, common_devices: list[str] | None = None, driver_dir: str = "") -> dict:
    """What Docker needs for ``gpus``: ``{"device_requests": [...], "devices": [...], "binds": {...}, "env": {...}}``.

    Built fresh for every spawn from the allotment; nothing configured is modified.
    """
    if mode not in MODES:
        raise ValueError(f"gpu_mode must be one of {', '.join(MODES)}, not {mode!r}")
    result: dict = {"device_requests": [], "devices": [], "binds": {}, "env": {}}
    if not gpus:
        # Make sure no GPU leaks in through an image's default NVIDIA_VISIBLE_DEVICES=all.
        result["env"] = {"NVIDIA_VISIBLE_DEVICES": "void"}
        return result
    uuids = [g.uuid for g in gpus]
    visible = ",".join(uuids)
    result["env"] = {
        "NVIDIA_VISIBLE_DEVICES": visible,
        "CUDA_VISIBLE_DEVICES": visible,
        "DEVDOCK_GPUS": visible,
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,graphics,video",
    }
    if mode == "nvidia":
        result["device_requests"] = [
            DeviceRequest(driver="nvidia", device_ids=uuids, capabilities=[["gpu", "compute", "utility"]])
        ]
    elif mode == "cdi":
        result["device_requests"] = [DeviceRequest(driver="cdi", device_ids=[f"nvidia.com/gpu={u}" for u in uuids])]
    else:
        nodes = [g.device for g in gpus] + list(common_devices or [])
        result["devices"] = [f"{node}:{node}:rwm" for node in nodes]
        if driver_dir:
            result["binds"] = {driver_dir: {"bind": driver_dir, "mode": "ro"}}
            result["env"]["PATH"] = f"{driver_dir}/bin:/opt/devdock/venv/bin:/usr/local/bin:/usr/bin:/bin"
            result["env"]["LD_LIBRARY_PATH"] = f"{driver_dir}/lib64:{driver_dir}/lib"
        # Without the toolkit's hook the env vars are only informative; the nodes decide what is visible.
    return result


def engine_gpu_support(info: dict) -> dict:
    """What ``docker info`` says about GPUs: ``{"nvidia_runtime", "cdi", "modes", "summary"}``.

    ``modes`` are the ``gpu_mode`` values this engine can serve: ``devices`` always (device nodes and a driver
    mount), ``cdi`` when CDI is on (Docker 25 and later; Docker 28 has it on by default) and ``nvidia`` with
    the NVIDIA container runtime.
    """
    runtimes = set((info.get("Runtimes") or {}).keys())
    nvidia = "nvidia" in runtimes
    cdi_dirs = list(info.get("CDISpecDirs") or [])
    modes = [m for m, ok in (("nvidia", nvidia), ("cdi", bool(cdi_dirs)), ("devices", True)) if ok]
    version = info.get("ServerVersion") or "unknown"
    engine = f"Docker {version}"
    if nvidia:
        detail = "the NVIDIA runtime is installed"
    elif cdi_dirs:
        detail = f"CDI is enabled (specs in {', '.join(cdi_dirs)}; `nvidia-ctk cdi generate` writes NVIDIA's)"
    else:
        detail = "no NVIDIA runtime and no CDI: GPU profiles can only work in gpu_mode 'devices'"
    summary = f"{engine}: gpu_mode {', '.join(repr(m) for m in modes)} supported; {detail}"
    return {"nvidia_runtime": nvidia, "cdi": bool(cdi_dirs), "modes": modes, "version": version, "summary": summary}


PROBE_COMMAND = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]


def probe_inventory(client, image: str) -> list[GPU]:
    """Run ``nvidia-smi`` once in a throw-away container with every GPU (blocking; call in an executor)."""
    container = client.create_container(
        image,
        command=PROBE_COMMAND,
        entrypoint=[],
        host_config=client.create_host_config(
            device_requests=[DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu", "utility"]])],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            network_mode="none",
        ),
        labels={MANAGED_LABEL: "true", ROLE_LABEL: "gpu-probe"},
    )
    try:
        client.start(container)
        client.wait(container, timeout=60)
        return parse_nvidia_smi(client.logs(container, stdout=True, stderr=False).decode(errors="replace"))
    finally:
        client.remove_container(container, force=True)

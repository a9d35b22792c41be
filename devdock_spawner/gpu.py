"""GPUs: inventory, allocation to servers, and Docker requests for the allotted devices.

Pure apart from :func:`engine_gpu_support` and :func:`probe_inventory`, which take a docker-py client.

- **Inventory**: from configuration (wins), or found once by a probe container that runs
  ``nvidia-smi`` with every GPU (needs the NVIDIA container toolkit), cached for the hub's lifetime. A GPU in
  MIG mode brings its MIG instances (``MIG-...`` UUIDs, profiles such as ``1g.18gb``) as units of their own.
- **Allocation**: :class:`GPUAllocator` hands out specific GPU (or MIG instance) UUIDs under a lock,
  exclusively by default (``max_users_per_gpu``), never a GPU whole while one of its instances is held or
  the other way round, never a unit that is out of the pool for its health; it can be rebuilt from the
  containers' ``io.devdock.gpus`` labels after a hub restart, so a restart never double-books.
- **Requests**: :func:`device_config` compiles an allotment into what Docker understands, for three
  modes: ``nvidia`` (a ``DeviceRequest`` for the NVIDIA runtime), ``cdi`` (CDI device names) and
  ``devices`` (device nodes plus a read-only driver mount, for hosts without the toolkit).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from docker.types import DeviceRequest

from .naming import GPU_LABEL, server_key_from_labels

MODES = ("nvidia", "cdi", "devices")
#: The kind of a whole GPU; a MIG instance's kind is its profile ("1g.18gb").
WHOLE = "gpu"
#: MIG profile names as nvidia-smi prints them: "1g.18gb", "1g.18gb+me", "1c.3g.40gb", "7g.141gb".
MIG_PROFILE = re.compile(r"^(\d+c\.)?\d+g\.\d+gb(\+[a-z]+)*$")


@dataclass(frozen=True)
class GPU:
    """A unit of allocation: a whole GPU, or one MIG instance of a GPU in MIG mode (``parent`` set)."""

    index: int
    uuid: str
    name: str = "GPU"
    memory_mib: int = 0
    #: host device node, for the ``devices`` mode
    device: str = ""
    #: a MIG instance: the UUID of its GPU, and its profile ("1g.18gb")
    parent: str = ""
    mig_profile: str = ""
    #: a MIG instance: its device number on its GPU (nvidia-smi -L's "Device N")
    mig_device: int = 0

    @property
    def kind(self) -> str:
        return self.mig_profile or WHOLE

    @property
    def label(self) -> str:
        """``"0"`` for GPU 0, ``"0/MIG 1g.18gb #2"`` for an instance of it (what admins and users read)."""
        return f"{self.index}/MIG {self.mig_profile} #{self.mig_device}" if self.parent else str(self.index)

    @classmethod
    def from_config(cls, entry: dict) -> GPU:
        """One ``gpu_inventory`` entry: ``{"index": 0, "uuid": "GPU-...", "name": ..., "memory_mib": ...}``, or
        a MIG instance ``{"index": 0, "uuid": "MIG-...", "parent": "GPU-...", "mig_profile": "1g.18gb"}``."""
        if not isinstance(entry, dict):
            raise ValueError(f"gpu_inventory entries must be dicts, not {entry!r}")
        unknown = set(entry) - {"index", "uuid", "name", "memory_mib", "device", "parent", "mig_profile", "mig_device"}
        if unknown:
            raise ValueError(f"unknown keys in gpu_inventory entry: {sorted(unknown)}")
        if "uuid" not in entry or "index" not in entry:
            raise ValueError(f"gpu_inventory entries need 'index' and 'uuid': {entry}")
        index = int(entry["index"])
        uuid, parent, profile = str(entry["uuid"]), str(entry.get("parent", "")), str(entry.get("mig_profile", ""))
        if bool(parent) != bool(profile) or (parent and not uuid.startswith("MIG-")):
            raise ValueError(
                f"a MIG instance in gpu_inventory needs a 'MIG-...' uuid, its GPU's uuid as 'parent' and its "
                f"'mig_profile' (e.g. '1g.18gb'): {entry}"
            )
        if profile and not MIG_PROFILE.match(profile):
            raise ValueError(f"gpu_inventory: {profile!r} is not a MIG profile name such as '1g.18gb'")
        return cls(
            index=index,
            uuid=uuid,
            name=str(entry.get("name", "GPU")),
            memory_mib=int(entry.get("memory_mib", 0) or (_mig_memory_mib(profile) if profile else 0)),
            device=str(entry.get("device") or f"/dev/nvidia{index}"),
            parent=parent,
            mig_profile=profile,
            mig_device=int(entry.get("mig_device", 0)),
        )


def _mig_memory_mib(profile: str) -> int:
    found = re.search(r"(\d+)gb", profile)
    return int(found.group(1)) * 1024 if found else 0


def check_inventory(inventory: list[GPU]) -> None:
    """Refuse an inventory whose UUIDs repeat or whose MIG instances name a GPU it does not have."""
    uuids = [g.uuid for g in inventory]
    twice = sorted({u for u in uuids if uuids.count(u) > 1})
    if twice:
        raise ValueError(f"gpu_inventory lists {', '.join(twice)} more than once")
    whole = {g.uuid for g in inventory if not g.parent}
    orphans = sorted(g.uuid for g in inventory if g.parent and g.parent not in whole)
    if orphans:
        raise ValueError(f"gpu_inventory: the MIG instances {', '.join(orphans)} name a parent GPU it does not list")


_LIST_GPU = re.compile(r"^GPU (\d+): (.+?) \(UUID: (GPU-[0-9A-Fa-f-]+)\)\s*$")
_LIST_MIG = re.compile(r"^\s+MIG ([\w.+]+)\s+Device\s+(\d+): \(UUID: (MIG-[\w/-]+)\)\s*$")


def parse_nvidia_smi_list(output: str) -> list[GPU]:
    """``nvidia-smi -L``: every GPU, and under a GPU in MIG mode its MIG instances.

    Both spellings of MIG UUIDs are read: ``MIG-<uuid>`` (drivers R470 and later) and the older
    ``MIG-GPU-<uuid>/<gi>/<ci>``. Lines it does not know are skipped.
    """
    units: list[GPU] = []
    current: GPU | None = None
    for line in output.splitlines():
        whole = _LIST_GPU.match(line)
        if whole:
            current = GPU(int(whole.group(1)), whole.group(3), whole.group(2), 0, f"/dev/nvidia{whole.group(1)}")
            units.append(current)
            continue
        mig = _LIST_MIG.match(line)
        if mig and current is not None and MIG_PROFILE.match(mig.group(1)):
            units.append(
                GPU(
                    current.index,
                    mig.group(3),
                    current.name,
                    _mig_memory_mib(mig.group(1)),
                    current.device,
                    parent=current.uuid,
                    mig_profile=mig.group(1),
                    mig_device=int(mig.group(2)),
                )
            )
    return units


def merge_inventory(listed: list[GPU], queried: list[GPU]) -> list[GPU]:
    """``nvidia-smi -L``'s units with the memory ``--query-gpu`` gives for whole GPUs."""
    memory = {g.uuid: g.memory_mib for g in queried}
    return [
        GPU(g.index, g.uuid, g.name, memory.get(g.uuid, g.memory_mib), g.device, g.parent, g.mig_profile, g.mig_device)
        for g in listed
    ] or list(queried)


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


class GPUsBusy(NotEnoughGPUs):
    """The request could be met once others give GPUs back (it may wait in line: gpu_queue.py)."""


class GPUAllocator:
    """Which server holds which GPU (or MIG instance); thread-safe; one per hub.

    Units of one ``kind`` are handed out together: whole GPUs (:data:`WHOLE`) or MIG instances of one profile.
    A GPU is never given whole while one of its instances is held, nor an instance while its GPU is held whole.
    Units out of the pool for their health (:meth:`set_unhealthy`) go to nobody new; their holders keep them.
    """

    def __init__(self, inventory: list[GPU], max_users_per_gpu: int = 1):
        if max_users_per_gpu < 0:
            raise ValueError("max_users_per_gpu must be >= 0 (0: no limit)")
        check_inventory(inventory)
        self.inventory = list(inventory)
        self.by_uuid = {g.uuid: g for g in self.inventory}
        self.children: dict[str, list[str]] = {}
        for g in self.inventory:
            if g.parent:
                self.children.setdefault(g.parent, []).append(g.uuid)
        self.max_users = max_users_per_gpu
        self._lock = threading.Lock()
        self._holders: dict[str, set[str]] = {g.uuid: set() for g in self.inventory}
        #: {GPU uuid: why it is out of the pool}; an instance is out when its GPU is
        self._unhealthy: dict[str, str] = {}

    # --- queries -----------------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Whole GPUs in the inventory."""
        return self.total_of(WHOLE)

    def total_of(self, kind: str = WHOLE) -> int:
        return sum(1 for g in self.inventory if g.kind == kind)

    def kinds(self) -> list[str]:
        """The kinds this inventory has: ``"gpu"`` first, then MIG profiles by name."""
        found = {g.kind for g in self.inventory}
        return sorted(found, key=lambda k: (k != WHOLE, k))

    def _has_room(self, uuid: str, key: str) -> bool:
        holders = self._holders[uuid]
        if key in holders:
            return True
        if self._why_out(uuid) or self._conflicts(uuid, key):
            return False
        return self.max_users == 0 or len(holders) < self.max_users

    def _conflicts(self, uuid: str, key: str) -> bool:
        """Held in the other shape by another server: the GPU's instances, or the instance's GPU."""
        unit = self.by_uuid[uuid]
        related = [unit.parent] if unit.parent else self.children.get(uuid, [])
        return any(self._holders[r] - {key} for r in related)

    def _why_out(self, uuid: str) -> str:
        unit = self.by_uuid[uuid]
        return self._unhealthy.get(uuid) or self._unhealthy.get(unit.parent, "")

    def free(self, key: str = "", kind: str = WHOLE) -> int:
        """Units of ``kind`` that one more server (``key``) could get now."""
        with self._lock:
            return sum(1 for g in self.inventory if g.kind == kind and self._has_room(g.uuid, key))

    def allocated(self, kind: str = WHOLE) -> int:
        with self._lock:
            return sum(1 for g in self.inventory if g.kind == kind and self._holders[g.uuid])

    def holders(self) -> dict[str, list[str]]:
        """``{uuid: [server keys]}`` for the admin page."""
        with self._lock:
            return {uuid: sorted(keys) for uuid, keys in self._holders.items()}

    def held_by(self, key: str) -> list[str]:
        with self._lock:
            return [g.uuid for g in self.inventory if key in self._holders[g.uuid]]

    def can_satisfy(
        self, count: int | str, pinned: list[str] | None = None, key: str = "", per_owner: int = 0, kind: str = WHOLE
    ) -> bool:
        return not self.refusal(count, pinned, key, per_owner, kind)

    def refusal(
        self, count: int | str, pinned: list[str] | None = None, key: str = "", per_owner: int = 0, kind: str = WHOLE
    ) -> str:
        """Why ``allocate`` would refuse this request now, in the user's words ("" if it would not)."""
        problem = self.problem(count, pinned, key, per_owner, kind)
        return str(problem) if problem else ""

    def problem(
        self, count: int | str, pinned: list[str] | None = None, key: str = "", per_owner: int = 0, kind: str = WHOLE
    ) -> NotEnoughGPUs | None:
        """What ``allocate`` would raise now (:class:`GPUsBusy` when waiting could cure it), None if nothing."""
        with self._lock:
            try:
                if per_owner:
                    self._check_owner_cap(key, count, pinned, per_owner, kind)
                self._choose(count, pinned, key, kind)
            except NotEnoughGPUs as e:
                return e
            return None

    # --- health ------------------------------------------------------------------------------

    def set_unhealthy(self, reasons: dict[str, str]) -> None:
        """Which GPUs are out of the pool now, ``{GPU uuid: reason}`` (replaces the previous set)."""
        with self._lock:
            self._unhealthy = {u: r for u, r in reasons.items() if u in self.by_uuid}

    def unhealthy(self) -> dict[str, str]:
        with self._lock:
            return dict(self._unhealthy)

    def health_of(self, uuids: list[str]) -> dict[str, str]:
        """``{uuid: reason}`` for those of ``uuids`` (a server's) that are on a GPU out of the pool."""
        with self._lock:
            return {u: self._why_out(u) for u in uuids if u in self.by_uuid and self._why_out(u)}

    # --- changes -----------------------------------------------------------------------------

    def allocate(
        self, key: str, count: int | str, pinned: list[str] | None = None, per_owner: int = 0, kind: str = WHOLE
    ) -> list[str]:
        """UUIDs for ``key``: ``count`` units of ``kind`` (or ``"all"``), from ``pinned`` ones if given.

        A server asking again gets what it already holds when that still fits the request. ``per_owner`` caps
        the units one person holds across all their servers (keys ``user/server``); 0: no cap.
        """
        with self._lock:
            if per_owner:
                # The cap first: with it reached, "not enough free" would tell the user the wrong thing.
                self._check_owner_cap(key, count, pinned, per_owner, kind)
            chosen = self._choose(count, pinned, key, kind)
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

    def _pool(self, pinned: list[str] | None, kind: str) -> list[GPU]:
        pool = [g for g in self.inventory if g.kind == kind]
        if pinned:
            pool = [g for g in pool if g.uuid in pinned or (not g.parent and str(g.index) in pinned)]
        return pool

    def _check_owner_cap(
        self, key: str, count: int | str, pinned: list[str] | None, per_owner: int, kind: str = WHOLE
    ) -> None:
        pool = self._pool(pinned, kind)
        wanted = len(pool) if count == "all" else max(0, int(count))
        owner = key.rpartition("/")[0]
        others = {
            u for u, holders in self._holders.items() for k in holders if k != key and k.rpartition("/")[0] == owner
        }
        if wanted and len(others) + wanted > per_owner:
            raise NotEnoughGPUs(owner_cap_refusal(len(others), wanted, per_owner))

    def _choose(self, count: int | str, pinned: list[str] | None, key: str, kind: str = WHOLE) -> list[str]:
        """The units to give ``key`` (called with the lock held); raises with a sentence for the user."""
        if pinned:
            unknown = [p for p in pinned if p not in self.by_uuid and not _index_in(p, self.inventory)]
            if unknown:
                raise NotEnoughGPUs(f"GPU(s) {', '.join(unknown)} are not in this host's inventory.")
        pool = self._pool(pinned, kind)
        wanted = len(pool) if count == "all" else int(count)
        if wanted < 0:
            raise NotEnoughGPUs("A negative number of GPUs cannot be requested.")
        if wanted == 0:
            return []
        what = "GPU" if kind == WHOLE else f"MIG {kind} GPU slice"
        if not pool:
            if kind == WHOLE:
                raise NotEnoughGPUs("This server has no GPUs to hand out.")
            raise NotEnoughGPUs(f"This server has no {what}s to hand out.")
        free = [g for g in pool if self._has_room(g.uuid, key)]
        # Prefer what this server already holds, then GPUs not split into instances, the least shared, by index.
        free.sort(
            key=lambda g: (
                key not in self._holders[g.uuid],
                bool(self.children.get(g.uuid)),
                len(self._holders[g.uuid]),
                g.index,
                g.mig_device,
            )
        )
        if len(free) < wanted:
            # Who holds the others is for admins (their page shows it), not for every user who asks.
            out = sum(1 for g in pool if self._why_out(g.uuid))
            why = f" ({out} out of service for errors)" if out else ""
            # More than the healthy pool holds can never be met by waiting: refused, not queued.
            error = GPUsBusy if wanted <= len(pool) - out else NotEnoughGPUs
            raise error(
                f"{wanted} {what}{'s' if wanted != 1 else ''} requested, but only {len(free)} of {len(pool)} "
                f"{'is' if len(free) == 1 else 'are'} free right now{why}. Choose a profile with fewer "
                "GPUs or try again when one is released."
            )
        return [g.uuid for g in free[:wanted]]


def owner_cap_refusal(held: int, wanted: int, per_owner: int) -> str:
    """Why a person who holds ``held`` GPUs in their other servers may not take ``wanted`` more ("" if they may).

    ``per_owner`` is ``gpu_max_per_user`` (0: no cap); the single engine's allocator and Swarm's check share it.
    """
    if not per_owner or not wanted or held + wanted <= per_owner:
        return ""
    plural = "s" if held != 1 else ""
    return (
        f"You already hold {held} GPU{plural} in your other servers, and this profile asks for {wanted}: at "
        f"most {per_owner} per person. Stop one of your other servers (or choose a profile with fewer "
        "GPUs) to start this one."
    )


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
    if mode == "devices" and any(g.parent for g in gpus):
        raise ValueError(
            "MIG instances need gpu_mode 'nvidia' or 'cdi' (their device nodes are the driver's capabilities, which "
            "the NVIDIA container toolkit or its CDI spec name): devices mode gives only whole GPUs"
        )
    uuids = [g.uuid for g in gpus]
    visible = ",".join(uuids)
    result["env"] = {
        "NVIDIA_VISIBLE_DEVICES": visible,
        "CUDA_VISIBLE_DEVICES": visible,
        "DEVDOCK_GPUS": visible,
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,graphics,video",
    }
    if mode == "nvidia":
        # Docker appends NVIDIA_DRIVER_CAPABILITIES from the request's capabilities after the container's own
        # environment, and that one wins: so the request names all four (graphics: the desktop's OpenGL on the
        # GPU; video: NVENC for Selkies), not only compute and utility.
        capabilities = [["gpu", "compute", "utility", "graphics", "video"]]
        result["device_requests"] = [DeviceRequest(driver="nvidia", device_ids=uuids, capabilities=capabilities)]
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


QUERY_GPUS = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
#: ``nvidia-smi -L`` (GPUs and their MIG instances), a separator, then the query (memory of each GPU).
PROBE_SEPARATOR = "=== devdock ==="
PROBE_COMMAND = ["sh", "-c", f"nvidia-smi -L && echo '{PROBE_SEPARATOR}' && {' '.join(QUERY_GPUS)}"]


def parse_probe(output: str) -> list[GPU]:
    listed, _, queried = output.partition(PROBE_SEPARATOR)
    return merge_inventory(parse_nvidia_smi_list(listed), parse_nvidia_smi(queried))

"""The GPU part of DevDockSpawner: settings, the hub's allocator, allotting and giving back (a mixin).

The pure logic lives in gpu.py (inventory, allocator, DeviceRequests); the profiles and the spawn form that
ask for GPUs are in spawner_profiles.py.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from datetime import UTC, datetime

from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, Int, List, Unicode
from traitlets.config import LoggingConfigurable

from . import gpu as gpus
from . import gpu_monitor, metrics, naming
from .hubstate import hub_state
from .profiles import Profile


class GPUMixin(LoggingConfigurable):
    """GPUs allotted to servers, exclusively unless configured otherwise.

    Mixed into :class:`~devdock_spawner.spawner.DevDockSpawner`; uses its ``docker()`` seam and names.
    """

    # --- GPUs ------------------------------------------------------------------------------

    gpu_inventory = List(
        Dict(),
        config=True,
        help="""
        The host's GPUs, e.g. ``[{"index": 0, "uuid": "GPU-8f3c...", "name": "A100", "memory_mib": 81920}]``
        (``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv`` prints them). Optional
        ``device`` is the device node for ``gpu_mode = "devices"`` (default ``/dev/nvidia<index>``).
        When set it wins; when empty and ``gpu_discovery`` is on, devdock asks ``nvidia-smi`` in a
        one-shot container once. Default: empty.
        """,
    )

    gpu_discovery = Bool(
        True,
        config=True,
        help="""
        Find the GPUs with a one-shot ``nvidia-smi`` container (needs the NVIDIA container toolkit)
        when ``gpu_inventory`` is empty. The result is kept for the hub's lifetime. Default: True.
        """,
    )

    gpu_mode = CaselessStrEnum(
        list(gpus.MODES),
        "nvidia",
        config=True,
        help="""
        How allotted GPUs reach the container: ``nvidia`` (a Docker ``DeviceRequest`` for the NVIDIA
        runtime, the usual setup), ``cdi`` (CDI device names ``nvidia.com/gpu=<uuid>``) or ``devices``
        (the device nodes plus a read-only mount of ``gpu_driver_dir``, for hosts without the toolkit).
        """,
    )

    gpu_max_users_per_gpu = Int(
        1,
        config=True,
        help="""
        How many servers may hold the same GPU. 1 (the default) allots GPUs exclusively; 0 means no
        limit (shared); N lets N servers share each GPU.
        """,
    )

    gpu_max_per_user = Int(
        0,
        config=True,
        help="""
        The most GPUs one person may hold across all their servers (default and named), so that nobody takes
        every GPU by starting several servers. A start past it gets a 409 with a sentence. 0: no cap. devdock's
        jupyterhub_config.py sets 2 (``DEVDOCK_GPU_PER_USER``). Default: 0.
        """,
    )

    gpu_common_devices = List(
        Unicode(),
        ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"],
        config=True,
        help="Device nodes every GPU container needs in ``devices`` mode, besides the GPUs' own.",
    )

    gpu_driver_dir = Unicode(
        "/usr/local/nvidia",
        config=True,
        help="""
        Host folder with the NVIDIA driver's user-space files (``bin/nvidia-smi``, ``lib64``), mounted
        read-only in ``devices`` mode. Empty: mount nothing.
        """,
    )

    gpu_monitor_command = List(
        Unicode(),
        ["nvidia-smi"],
        config=True,
        help="""
        The command that reads the GPUs on the host, as a list (``nvidia-smi`` of the NVIDIA driver); devdock adds
        its ``--query-gpu`` and ``--query-compute-apps`` arguments. What it reads (each GPU's use, which process
        of which server holds how much memory, uncorrectable ECC errors, a GPU off the bus) goes to the admin page,
        the user's home page, ``/hub/metrics`` and the GPUs' health. It runs in the hub's own process, every
        ``usage_interval`` seconds, never in a user's container. Missing: the hub says so once and goes on without.
        Empty: off.
        """,
    )

    gpu_monitor_proc = Unicode(
        "/proc",
        config=True,
        help="""
        Where the host's processes are (``/proc``): a GPU process's ``cgroup`` file there names its container. A
        hub in a container needs the host's PID namespace (``pid: host``) for this. Default: ``/proc``.
        """,
    )

    gpu_kernel_log = Unicode(
        "/dev/kmsg",
        config=True,
        help="""
        The kernel log, read for the NVIDIA driver's XID errors (``NVRM: Xid (PCI:...): 79, ...``); only new
        messages count. Unreadable (a hub without the right to read it): said once, and XIDs are not seen. Empty:
        off. Default: ``/dev/kmsg``.
        """,
    )

    gpu_health_checks = Bool(
        True,
        config=True,
        help="""
        Take a GPU out of the pool for new servers when it reports an XID error that is not an application's
        (13, 31, 43, 45, 68, 109 are), uncorrectable ECC errors or pending page retirements, or falls off the
        bus; admins see why on the admin page and clear it there; users on it see a notice. False: GPUs are
        never taken out (the readings still show). Default: True.
        """,
    )

    gpu_busy_percent = Int(
        10,
        config=True,
        help="""
        A server whose GPUs (all held by it alone) are at least this busy counts as active for the idle culler:
        a training run keeps its GPU while nobody types. The maximum age (``cull_gpu_max_age``) still applies.
        0: GPU use never counts as activity. Default: 10 (percent).
        """,
    )

    #: Where the spawn form says the GPUs are.
    gpu_scope = "on this server"

    #: UUIDs of the GPUs this server holds (state; empty when stopped).
    gpu_ids = List(Unicode())

    async def gpu_allocator(self) -> gpus.GPUAllocator:
        """The hub's GPU allocator: built once from the inventory, then from the running containers."""
        await self.reconcile()
        state = hub_state()
        async with state.lock("gpu"):
            if state.gpu_allocator is None:
                state.gpu_allocator = await self._build_gpu_allocator()
        return state.gpu_allocator

    async def _build_gpu_allocator(self) -> gpus.GPUAllocator:
        info = await self.docker("info")
        support = gpus.engine_gpu_support(info)
        self.log.info("devdock GPU support on this engine: %s", support["summary"])
        if self.gpu_inventory:
            try:
                inventory = [gpus.GPU.from_config(entry) for entry in self.gpu_inventory]
                gpus.check_inventory(inventory)
            except (ValueError, TypeError) as e:
                raise web.HTTPError(500, f"devdock's gpu_inventory is misconfigured: {e}") from e
        elif self.gpu_discovery and support["nvidia_runtime"]:
            try:
                inventory = await asyncio.wrap_future(
                    self.executor.submit(gpus.probe_inventory, self.client, self.image)
                )
            except Exception as e:  # noqa: BLE001 - a failed probe means "no GPUs", said loudly
                self.log.error("devdock: GPU discovery with nvidia-smi failed: %s", e)
                inventory = []
        else:
            inventory = []
        self.log.info(
            "devdock GPU inventory: %s",
            ", ".join(f"{g.label}:{g.name}:{g.uuid}" for g in inventory) or "none",
        )
        if self.gpu_mode == "devices" and any(g.parent for g in inventory):
            self.log.error(
                "devdock: the GPU inventory has MIG instances, which gpu_mode 'devices' cannot give: profiles with "
                "'mig' will be refused; use gpu_mode 'nvidia' or 'cdi'"
            )
        allocator = gpus.GPUAllocator(inventory, self.gpu_max_users_per_gpu)
        # A restarted hub finds who holds what on the containers themselves (reconciliation ran first: what
        # is left are the servers the database knows and the running ones it does not, which keep theirs).
        containers = await self.docker("containers", all=True, filters={"label": f"{naming.HUB_LABEL}={self.hub_id}"})
        for key, uuids in gpus.gpus_from_containers(containers).items():
            allocator.adopt(key, uuids)
        metrics.update_gpu_gauges(allocator)
        return allocator

    async def allocate_gpus(self, profile: Profile) -> list[gpus.GPU]:
        allocator = await self.gpu_allocator()
        try:
            uuids = allocator.allocate(
                self.server_key,
                profile.gpus,
                list(profile.gpu_ids) or None,
                per_owner=self.gpu_max_per_user,
                kind=profile.gpu_kind,
            )
        except gpus.NotEnoughGPUs as e:
            raise web.HTTPError(409, str(e)) from e
        finally:
            metrics.update_gpu_gauges(allocator)
        self.gpu_ids = uuids
        return [allocator.by_uuid[u] for u in uuids]

    def release_gpus(self) -> None:
        allocator = hub_state().gpu_allocator
        if allocator is not None:
            allocator.release(self.server_key)
            metrics.update_gpu_gauges(allocator)
        self.gpu_ids = []

    # --- what happens on the GPUs (read on the host, once per hub and usage round) --------------

    async def read_gpus(self, containers: list[dict]) -> None:
        """One reading of the GPUs: use per server, health, the culler's "GPU busy" (``containers``: this hub's
        running containers, as ``docker ps`` lists them)."""
        state = hub_state()
        allocator = state.gpu_allocator
        if allocator is None and self.gpu_inventory:
            allocator = await self.gpu_allocator()
        if allocator is None or not allocator.inventory:
            return
        readings, processes = await self._gpu_readings()
        server_of_pid = self._servers_of_processes(processes, containers)
        holders = allocator.holders()
        held = {}
        for uuid, keys in holders.items():
            for key in keys:
                held.setdefault(key, []).append(uuid)
        parent_of = {g.uuid: g.parent for g in allocator.inventory if g.parent}
        use = gpu_monitor.use_by_server(processes, server_of_pid, readings, held, holders, parent_of)
        state.gpu_readings, state.gpu_use = readings, use
        self._health_round(allocator, readings)
        self._gpu_gauges(use, readings, allocator)
        if self.gpu_busy_percent:
            busy = [k for k, u in use.items() if u.utilization is not None and u.utilization >= self.gpu_busy_percent]
            if busy:
                self._count_as_activity(busy)

    async def _gpu_readings(self) -> tuple[dict, list]:
        state = hub_state()
        if not self.gpu_monitor_command:
            return {}, []
        command = list(self.gpu_monitor_command)
        if shutil.which(command[0]) is None:
            self._gpu_problem(f"{command[0]} is not on the hub's PATH: GPU use and health are not read")
            return {}, []
        try:
            gpu_text = await _run(command + gpu_monitor.QUERY_GPU_ARGS)
            apps_text = await _run(command + gpu_monitor.QUERY_APPS_ARGS)
        except (OSError, RuntimeError, TimeoutError) as e:
            self._gpu_problem(f"reading the GPUs with {command[0]} failed: {e}")
            return {}, []
        if state.gpu_monitor_problem:
            self.log.info("devdock: GPU use and health are read again")
        state.gpu_monitor_problem = ""
        return gpu_monitor.parse_gpu_query(gpu_text), gpu_monitor.parse_compute_apps(apps_text)

    def _gpu_problem(self, problem: str) -> None:
        state = hub_state()
        if state.gpu_monitor_problem != problem:
            self.log.warning("devdock: %s", problem)
        state.gpu_monitor_problem = problem

    def _servers_of_processes(self, processes: list, containers: list[dict]) -> dict[int, str]:
        """Host PID → server key, through each process's cgroup and the containers' labels."""
        keys = {c["Id"]: naming.server_key_from_labels(c.get("Labels")) for c in containers}
        found = {}
        for process in processes:
            try:
                with open(os.path.join(self.gpu_monitor_proc, str(process.pid), "cgroup")) as f:
                    container = gpu_monitor.container_id_from_cgroup(f.read())
            except OSError:
                continue  # the process ended since the reading
            if keys.get(container):
                found[process.pid] = keys[container]
        return found

    def _new_xids(self) -> list:
        """The driver's XIDs in the kernel log since the last round (none when it cannot be read)."""
        state = hub_state()
        if not self.gpu_kernel_log or state.kernel_log == -1:
            return []
        if state.kernel_log is None:
            try:
                fd = os.open(self.gpu_kernel_log, os.O_RDONLY | os.O_NONBLOCK)
                os.lseek(fd, 0, os.SEEK_END)  # only what comes from now on
                state.kernel_log = fd
            except OSError as e:
                self.log.warning("devdock: cannot read the kernel log %s (%s): GPU XID errors are not seen",
                                 self.gpu_kernel_log, e.strerror)  # fmt: skip
                state.kernel_log = -1
                return []
        xids = []
        while True:
            try:
                record = os.read(state.kernel_log, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:
                    continue  # records were overwritten before they were read: go on with the next
                raise
            if not record:
                break
            xid = gpu_monitor.parse_xid(record.decode(errors="replace"))
            if xid is not None:
                xids.append(xid)
        return xids

    def _health_round(self, allocator: gpus.GPUAllocator, readings: dict) -> None:
        state = hub_state()
        previous = state.gpu_health or gpu_monitor.Health()
        whole = [g.uuid for g in allocator.inventory if not g.parent]
        cleared, state.gpu_cleared = state.gpu_cleared, set()
        xids = self._new_xids()
        for xid in xids:
            self.log.warning("devdock: the NVIDIA driver reports XID %s on the GPU at %s: %s", xid.code, xid.bus_id,
                             xid.message or "(no message)")  # fmt: skip
        health = gpu_monitor.decide_health(previous, whole, readings, xids, cleared)
        state.gpu_health = health
        by_uuid = allocator.by_uuid
        for uuid, reason in health.out.items():
            if previous.out.get(uuid) != reason:
                self.log.error("devdock: GPU %s (%s) is out of the pool for new servers: %s",
                               by_uuid[uuid].label, uuid, reason)  # fmt: skip
        for uuid in set(previous.out) - set(health.out):
            self.log.info("devdock: GPU %s (%s) is back in the pool", by_uuid[uuid].label, uuid)
        allocator.set_unhealthy(health.out if self.gpu_health_checks else {})
        metrics.update_gpu_gauges(allocator)
        metrics.GPU_UNHEALTHY.clear()
        for uuid, reason in health.out.items():
            metrics.GPU_UNHEALTHY.labels(uuid, reason).set(1)

    def _gpu_gauges(self, use: dict, readings: dict, allocator: gpus.GPUAllocator) -> None:
        for gauge in (metrics.SERVER_GPU_MEMORY, metrics.SERVER_GPU_UTILIZATION, metrics.GPU_UTILIZATION,
                      metrics.GPU_MEMORY_USED):  # fmt: skip
            gauge.clear()
        for key, server_use in use.items():
            user, _, server = key.rpartition("/")
            metrics.SERVER_GPU_MEMORY.labels(user, server).set(server_use.memory_mib << 20)
            if server_use.utilization is not None:
                metrics.SERVER_GPU_UTILIZATION.labels(user, server).set(server_use.utilization)
        for uuid, reading in readings.items():
            if reading.utilization is not None:
                metrics.GPU_UTILIZATION.labels(uuid).set(reading.utilization)
            metrics.GPU_MEMORY_USED.labels(uuid).set(reading.memory_used_mib << 20)

    def _count_as_activity(self, keys: list[str]) -> None:
        """The servers' GPUs are busy: that is activity, for the idle culler (it reads the hub's last_activity)."""
        from jupyterhub import orm  # the hub's own models; imported here, where a hub runs

        db = getattr(self.user, "db", None)
        if db is None:
            return
        now = datetime.now(UTC).replace(tzinfo=None)  # the hub's database keeps naive UTC times
        for key in keys:
            name, _, server = key.rpartition("/")
            row = (
                db.query(orm.Spawner)
                .join(orm.User, orm.Spawner.user_id == orm.User.id)
                .filter(orm.User.name == name, orm.Spawner.name == server)
                .one_or_none()
            )
            if row is not None and row.server_id is not None:
                row.last_activity = now
                if row.user.last_activity is None or row.user.last_activity < now:
                    row.user.last_activity = now
        db.commit()

    @property
    def gpu_use_now(self) -> gpu_monitor.ServerGPUUse | None:
        return hub_state().gpu_use.get(self.server_key)

    @property
    def gpu_health_notice(self) -> str:
        """A sentence for this server's user when a GPU it holds was taken out of the pool ("" when none)."""
        allocator = hub_state().gpu_allocator
        if allocator is None or not self.gpu_ids:
            return ""
        problems = allocator.health_of(list(self.gpu_ids))
        if not problems:
            return ""
        labels = ", ".join(allocator.by_uuid[u].label for u in problems)
        reasons = "; ".join(sorted(set(problems.values())))
        return (
            f"GPU {labels} of this server reported errors ({reasons}) and the admins were told. Your results may be "
            "wrong or your programs may fail: save your work and restart the server to get another GPU."
        )

    def clear_gpu(self, uuid: str) -> bool:
        """An admin clears a GPU: it returns to the pool at the next reading if it reads healthy."""
        allocator = hub_state().gpu_allocator
        if allocator is None or uuid not in allocator.by_uuid:
            return False
        hub_state().gpu_cleared.add(allocator.by_uuid[uuid].parent or uuid)
        return True


async def _run(command: list[str], timeout: float = 15) -> str:
    """A command's output; RuntimeError with its error output when it fails."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        raise TimeoutError(f"{command[0]} did not answer in {timeout:.0f} s") from None
    if process.returncode:
        text = (err or out).decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"exit status {process.returncode}: {text[-1] if text else ''}")
    return out.decode(errors="replace")

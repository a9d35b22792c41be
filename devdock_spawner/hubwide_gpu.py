"""The hub's GPUs: one allocator for every spawn, and what happens on the GPUs (part of the hub-wide object).

:class:`GPUWatch` is mixed into :class:`~devdock_spawner.hubwide.DevDockHub`: it builds the allocator once (from
the inventory, then from the running containers' labels), reads use and health every usage round, takes failing
GPUs out of the pool, and counts busy GPUs as activity. The decisions are gpu.py's and gpu_monitor.py's.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import time

from docker.types import DeviceRequest
from tornado import web

from . import gpu as gpus
from . import gpu_monitor, metrics, naming
from .gpu_queue import OVER_QUOTA_RANK, GPUQueue, Hold, Wait, Waiter, line_name
from .profiles import Profile

#: Seconds between two updates of a waiting spawn's place and estimate when nothing moved.
LINE_REFRESH = 15


class GPUWatch:
    """The hub's GPU allocator, readings and health (``self.settings`` holds the ``gpu_*`` settings)."""

    def _init_gpu_watch(self) -> None:
        #: the allocator, built at the first allocation (None until then)
        self.allocator: gpus.GPUAllocator | None = None
        #: what each server does on its GPUs {key: gpu_monitor.ServerGPUUse}; each GPU's last reading {uuid: ...}
        self.gpu_use: dict = {}
        self.gpu_readings: dict = {}
        #: the GPUs' health (gpu_monitor.Health), and the GPUs an admin cleared since the last round
        self.gpu_health: gpu_monitor.Health | None = None
        self.gpu_cleared: set = set()
        #: why GPU use and health cannot be read ("" while they can), said once in the log, shown to admins
        self.gpu_monitor_problem = ""
        #: the kernel log, open for XIDs (a file descriptor; None: not opened yet; -1: cannot be read)
        self._kernel_log: int | None = None
        #: the spawns waiting for GPUs, and the holds that will free them (gpu_queue.py)
        self.gpu_queue = GPUQueue()
        #: set when GPUs may have become free (one event per change; made in the hub's event loop)
        self._line_moved: asyncio.Event | None = None

    async def gpu_allocator(self) -> gpus.GPUAllocator:
        """The hub's GPU allocator: built once from the inventory, then from the running containers."""
        await self.start()
        async with self.lock("gpu"):
            if self.allocator is None:
                self.allocator = await self._build_gpu_allocator()
        return self.allocator

    async def _inventory(self, support: dict) -> list[gpus.GPU]:
        settings = self.settings
        if settings.gpu_inventory:
            try:
                inventory = [gpus.GPU.from_config(entry) for entry in settings.gpu_inventory]
                gpus.check_inventory(inventory)
            except (ValueError, TypeError) as e:
                raise web.HTTPError(500, f"devdock's gpu_inventory is misconfigured: {e}") from e
            return inventory
        if settings.gpu_discovery and support["nvidia_runtime"]:
            try:
                return await self._probe_inventory()
            except Exception as e:  # noqa: BLE001 - a failed probe means "no GPUs", said loudly
                self.log.error("devdock: GPU discovery with nvidia-smi failed: %s", e)
        return []

    async def _probe_inventory(self) -> list[gpus.GPU]:
        """Run ``nvidia-smi`` once in a throw-away container of the site's image with every GPU."""
        host = self.client.create_host_config(
            device_requests=[DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu", "utility"]])],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            network_mode="none",
        )
        labels = {naming.MANAGED_LABEL: "true", naming.ROLE_LABEL: "gpu-probe"}
        container = await self.docker(
            "create_container", self.settings.image, command=gpus.PROBE_COMMAND, entrypoint=[], host_config=host,
            labels=labels,
        )  # fmt: skip
        try:
            await self.docker("start", container)
            await self.docker("wait", container, timeout=60)
            logs = await self.docker("logs", container, stdout=True, stderr=False)
            return gpus.parse_probe(logs.decode(errors="replace"))
        finally:
            await self.docker("remove_container", container, force=True)

    async def _build_gpu_allocator(self) -> gpus.GPUAllocator:
        support = gpus.engine_gpu_support(await self.docker("info"))
        self.log.info("devdock GPU support on this engine: %s", support["summary"])
        inventory = await self._inventory(support)
        self.log.info(
            "devdock GPU inventory: %s",
            ", ".join(f"{g.label}:{g.name}:{g.uuid}" for g in inventory) or "none",
        )
        if self.settings.gpu_mode == "devices" and any(g.parent for g in inventory):
            self.log.error(
                "devdock: the GPU inventory has MIG instances, which gpu_mode 'devices' cannot give: profiles with "
                "'mig' will be refused; use gpu_mode 'nvidia' or 'cdi'"
            )
        allocator = gpus.GPUAllocator(inventory, self.settings.gpu_max_users_per_gpu)
        # A restarted hub finds who holds what on the containers themselves (reconciliation ran first: what
        # is left are the servers the database knows and the running ones it does not, which keep theirs).
        containers = await self.docker("containers", all=True, filters=self._own_label())
        created = {naming.server_key_from_labels(c.get("Labels")): c.get("Created") for c in containers}
        for key, uuids in gpus.gpus_from_containers(containers).items():
            allocator.adopt(key, uuids)
            kind = allocator.by_uuid[uuids[0]].kind if uuids and uuids[0] in allocator.by_uuid else gpus.WHOLE
            self.gpu_queue.held(key, Hold(kind, len(uuids), float(created.get(key) or time.time())))
        metrics.update_gpu_gauges(allocator)
        return allocator

    async def allocate_gpus(
        self, key: str, profile: Profile, per_owner: int, max_age: int = 0, wait: Wait | None = None
    ) -> list[gpus.GPU]:
        """The GPUs ``profile`` asks for, for the server ``key``.

        Taken: HTTP 409 with a sentence, or with ``wait`` the spawn waits in its line (gpu_queue.py) until its turn,
        told its place and estimate as the line moves, for at most ``wait.max_wait`` seconds since ``wait.since``.
        A request that no waiting can meet (more than there are, the owner's cap) is refused at once either way.
        ``max_age``: the longest the server may run (seconds, 0: no limit), for the estimates of those behind it.
        """
        allocator = await self.gpu_allocator()
        line = line_name(profile.gpu_kind, profile.gpu_ids)
        outcome = "cancelled"  # how a wait in line ended, for the metrics
        try:
            while True:
                moved = self._line_event()
                try:
                    uuids = self._allocate_in_turn(allocator, key, profile, per_owner, line)
                    outcome = "turn"
                    break
                except gpus.GPUsBusy as e:
                    if wait is None:
                        raise web.HTTPError(409, str(e)) from e
                    try:
                        await self._wait_in_line(allocator, key, line, profile, wait, moved)
                    except web.HTTPError:
                        outcome = "longest wait"
                        raise
                except gpus.NotEnoughGPUs as e:
                    raise web.HTTPError(409, str(e)) from e
        finally:
            if self.gpu_queue.leave(key):
                metrics.GPU_LINE_WAIT.labels(outcome).observe(time.time() - wait.since)
                self.wake_line()  # whoever was behind may be first now
            metrics.update_gpu_gauges(allocator)
            metrics.update_line_gauges(self.gpu_queue)
        if uuids:
            now = time.time()
            self.gpu_queue.held(key, Hold(line, len(uuids), now, now + max_age if max_age else 0.0))
            self._deadlines = None  # who a booking cuts short may change with a new holder
        return [allocator.by_uuid[u] for u in uuids]

    def _allocate_in_turn(self, allocator, key: str, profile: Profile, per_owner: int, line: str) -> list[str]:
        """Allocate unless someone who asked earlier waits for the same kind (then: busy, like taken GPUs)."""
        pinned = list(profile.gpu_ids) or None
        units = allocator.total_of(profile.gpu_kind) if profile.gpus == "all" else int(profile.gpus or 0)
        # GPU bookings on now (reservation.py): their members take the booked GPUs before the line; anyone else
        # must leave the booked GPUs that no member uses free.
        gate = self.reservation_gate(key, profile.gpu_kind, units)
        passes = gate is not None and gate.passes
        if profile.gpus and not passes and not self.gpu_queue.may_take(key, line):
            # A refusal that no waiting cures (more than there are, the owner's cap) wins; else the earlier go first.
            problem = allocator.problem(profile.gpus, pinned, key, per_owner, profile.gpu_kind)
            if problem is not None and not isinstance(problem, gpus.GPUsBusy):
                raise problem
            ahead = len(self.gpu_queue.line(line))
            raise gpus.GPUsBusy(f"{ahead} {'start waits' if ahead == 1 else 'starts wait'} for these GPUs already.")
        if gate is not None and gate.keep_free and allocator.free(key, profile.gpu_kind) - units < gate.keep_free:
            problem = allocator.problem(profile.gpus, pinned, key, per_owner, profile.gpu_kind)
            if problem is not None and not isinstance(problem, gpus.GPUsBusy):
                raise problem
            raise gpus.GPUsBusy(gate.why)
        return allocator.allocate(key, profile.gpus, pinned, per_owner=per_owner, kind=profile.gpu_kind)

    async def _wait_in_line(self, allocator, key, line: str, profile: Profile, wait: Wait, moved) -> None:
        """One turn of waiting: join (or keep the place), tell the place, sleep until the line moves."""
        now = time.time()
        count = allocator.total_of(profile.gpu_kind) if profile.gpus == "all" else int(profile.gpus)
        if self.gpu_queue.waiter(key) is None:
            rank = self._fair_share_rank(key) + (OVER_QUOTA_RANK if wait.last else 0)
            self.gpu_queue.join(Waiter(key, line, count, wait.since, rank=rank))
        else:
            self.gpu_queue.join(Waiter(key, line, count, wait.since))
        metrics.update_line_gauges(self.gpu_queue)
        waited = now - wait.since
        if waited >= wait.max_wait:
            what = "GPU" if profile.gpu_kind == gpus.WHOLE else f"MIG {profile.gpu_kind} GPU slice"
            raise web.HTTPError(
                503,
                f"No {what} was given back in the {round(waited / 60)} minutes this start waited in line (the most "
                "this hub lets a start wait). Try again later, or choose a profile with fewer GPUs.",
            )
        estimate = self.gpu_queue.estimate(key, allocator.free(key, profile.gpu_kind), now)
        wait.tell(self.gpu_queue.position(key), len(self.gpu_queue.line(line)), estimate)
        try:
            await asyncio.wait_for(moved.wait(), timeout=min(LINE_REFRESH, wait.max_wait - waited))
        except TimeoutError:
            pass

    def _fair_share_rank(self, key: str) -> float:
        """0 in first-come-first-served order; with fair share, the user's decayed recent GPU-seconds."""
        if self.settings.gpu_queue_order != "fair-share" or self.ledger is None:
            return 0.0
        user = key.rpartition("/")[0]
        try:
            return self.ledger.decayed_gpu_seconds(user, self.settings.gpu_fair_share_half_life)
        except Exception as e:  # noqa: BLE001 - without the figure the start waits in arrival order
            self.log.warning("devdock: the recent GPU use of %s is unknown (%s): in line by arrival", user, e)
            return 0.0

    def _line_event(self) -> asyncio.Event:
        if self._line_moved is None:
            self._line_moved = asyncio.Event()
        return self._line_moved

    def wake_line(self) -> None:
        """GPUs may be free now: every waiting spawn looks again (the first of each line may take them)."""
        moved, self._line_moved = self._line_moved, None
        if moved is not None:
            moved.set()

    def release_gpus(self, key: str) -> None:
        if self.allocator is not None:
            held = self.allocator.held_by(key)
            self.allocator.release(key)
            metrics.update_gpu_gauges(self.allocator)
            self.gpu_queue.given_back(key, time.time())
            self.forget_told_end(key)
            if held:
                self.wake_line()

    def gpu_health_notice(self, gpu_ids: list[str]) -> str:
        """A sentence for a server's user when a GPU it holds was taken out of the pool ("" when none)."""
        if self.allocator is None or not gpu_ids:
            return ""
        problems = self.allocator.health_of(list(gpu_ids))
        if not problems:
            return ""
        labels = ", ".join(self.allocator.by_uuid[u].label for u in problems)
        reasons = "; ".join(sorted(set(problems.values())))
        return (
            f"GPU {labels} of this server reported errors ({reasons}) and the admins were told. Your results may be "
            "wrong or your programs may fail: save your work and restart the server to get another GPU."
        )

    def clear_gpu(self, uuid: str) -> bool:
        """An admin clears a GPU: it returns to the pool at the next reading if it reads healthy."""
        if self.allocator is None or uuid not in self.allocator.by_uuid:
            return False
        self.gpu_cleared.add(self.allocator.by_uuid[uuid].parent or uuid)
        return True

    # --- what happens on the GPUs (read on the host, every usage round) -----------------------

    async def read_gpus(self, containers: list[dict]) -> None:
        """One reading of the GPUs: use per server, health, the culler's "GPU busy" (``containers``: this hub's
        running containers, as ``docker ps`` lists them)."""
        allocator = self.allocator
        if allocator is None and self.settings.gpu_inventory:
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
        self.gpu_readings, self.gpu_use = readings, use
        self._health_round(allocator, readings)
        self._gpu_gauges(use, readings)
        busy_percent = self.settings.gpu_busy_percent
        if busy_percent:
            busy = [k for k, u in use.items() if u.utilization is not None and u.utilization >= busy_percent]
            if busy:
                self.count_as_activity(busy)

    async def _gpu_readings(self) -> tuple[dict, list]:
        if not self.settings.gpu_monitor_command:
            return {}, []
        command = list(self.settings.gpu_monitor_command)
        if shutil.which(command[0]) is None:
            self._gpu_problem(f"{command[0]} is not on the hub's PATH: GPU use and health are not read")
            return {}, []
        try:
            gpu_text = await _run(command + gpu_monitor.QUERY_GPU_ARGS)
            apps_text = await _run(command + gpu_monitor.QUERY_APPS_ARGS)
        except (OSError, RuntimeError, TimeoutError) as e:
            self._gpu_problem(f"reading the GPUs with {command[0]} failed: {e}")
            return {}, []
        if self.gpu_monitor_problem:
            self.log.info("devdock: GPU use and health are read again")
        self.gpu_monitor_problem = ""
        return gpu_monitor.parse_gpu_query(gpu_text), gpu_monitor.parse_compute_apps(apps_text)

    def _gpu_problem(self, problem: str) -> None:
        if self.gpu_monitor_problem != problem:
            self.log.warning("devdock: %s", problem)
        self.gpu_monitor_problem = problem

    def _servers_of_processes(self, processes: list, containers: list[dict]) -> dict[int, str]:
        """Host PID → server key, through each process's cgroup and the containers' labels."""
        keys = {c["Id"]: naming.server_key_from_labels(c.get("Labels")) for c in containers}
        found = {}
        for process in processes:
            try:
                with open(os.path.join(self.settings.gpu_monitor_proc, str(process.pid), "cgroup")) as f:
                    container = gpu_monitor.container_id_from_cgroup(f.read())
            except OSError:
                continue  # the process ended since the reading
            if keys.get(container):
                found[process.pid] = keys[container]
        return found

    def _open_kernel_log(self) -> bool:
        path = self.settings.gpu_kernel_log
        if not path or self._kernel_log == -1:
            return False
        if self._kernel_log is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                os.lseek(fd, 0, os.SEEK_END)  # only what comes from now on
                self._kernel_log = fd
            except OSError as e:
                self.log.warning("devdock: cannot read the kernel log %s (%s): GPU XID errors are not seen",
                                 path, e.strerror)  # fmt: skip
                self._kernel_log = -1
                return False
        return True

    def close_kernel_log(self) -> None:
        if self._kernel_log not in (None, -1):
            os.close(self._kernel_log)
        self._kernel_log = None

    def _new_xids(self) -> list:
        """The driver's XIDs in the kernel log since the last round (none when it cannot be read)."""
        if not self._open_kernel_log():
            return []
        xids = []
        while True:
            try:
                record = os.read(self._kernel_log, 8192)
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
        previous = self.gpu_health or gpu_monitor.Health()
        whole = [g.uuid for g in allocator.inventory if not g.parent]
        cleared, self.gpu_cleared = self.gpu_cleared, set()
        xids = self._new_xids()
        for xid in xids:
            self.log.warning("devdock: the NVIDIA driver reports XID %s on the GPU at %s: %s", xid.code, xid.bus_id,
                             xid.message or "(no message)")  # fmt: skip
        health = gpu_monitor.decide_health(previous, whole, readings, xids, cleared)
        self.gpu_health = health
        by_uuid = allocator.by_uuid
        for uuid, reason in health.out.items():
            if previous.out.get(uuid) != reason:
                self.log.error("devdock: GPU %s (%s) is out of the pool for new servers: %s",
                               by_uuid[uuid].label, uuid, reason)  # fmt: skip
        for uuid in set(previous.out) - set(health.out):
            self.log.info("devdock: GPU %s (%s) is back in the pool", by_uuid[uuid].label, uuid)
            self.wake_line()
        allocator.set_unhealthy(health.out if self.settings.gpu_health_checks else {})
        metrics.update_gpu_gauges(allocator)
        metrics.GPU_UNHEALTHY.clear()
        for uuid, reason in health.out.items():
            metrics.GPU_UNHEALTHY.labels(uuid, reason).set(1)

    @staticmethod
    def _gpu_gauges(use: dict, readings: dict) -> None:
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

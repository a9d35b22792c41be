"""Resources: what one server may take of the shared box, and what it takes (a mixin).

Every server has a memory limit, a CPU limit, bounded ``/tmp``, rotated logs and a pids limit by default, and is
the first the host's OOM killer picks. What each one uses (memory, CPU, its home's size) and the out-of-memory
kills the kernel made inside it are read from the engine, hub-wide, for the admin page, the user's home page and
``/hub/metrics`` (:mod:`devdock_spawner.usage` parses).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import UTC, datetime

from traitlets import Int, Unicode, default
from traitlets.config import LoggingConfigurable

from . import metrics, naming, usage
from .hubstate import hub_state


class ResourcesMixin(LoggingConfigurable):
    """Limits per server, and the hub-wide reading of what servers use."""

    # --- resources ---------------------------------------------------------------------------

    @default("mem_limit")
    def _default_mem_limit(self):
        """8 GiB: every server has a memory limit, so one user's notebook cannot bring the host's OOM killer onto
        the hub or other users. A profile's ``overrides.mem_limit`` wins; ``None`` means no limit."""
        return "8G"

    @default("cpu_limit")
    def _default_cpu_limit(self):
        """Three quarters of the host's CPUs (at least one): one busy user cannot take the whole machine, and the
        hub always has CPU left. A profile's ``overrides.cpu_limit`` wins; ``None`` means no limit."""
        return max(1.0, round((os.cpu_count() or 1) * 0.75, 2))

    tmp_size = Unicode(
        "2g",
        config=True,
        help="""
        Size of the tmpfs on ``/tmp`` and ``/var/tmp`` (counted against the memory limit). They are the only
        places outside the home where a user can write, so the container's writable layer stays bounded on every
        storage driver. Example: ``"8g"``. Empty: no tmpfs (writes go to the container layer, unbounded).
        """,
    )

    log_max_size = Unicode(
        "10m",
        config=True,
        help="""
        Docker log rotation for servers (json-file driver): the size of one log file. Output floods (a ``print``
        loop in a kernel) cannot fill the host's disk. Empty: the engine's default. Default: ``"10m"``.
        """,
    )

    log_max_files = Int(3, config=True, help="How many rotated log files Docker keeps per server. Default: 3.")

    oom_score_adj = Int(
        500,
        config=True,
        help="""
        How readily the host's OOM killer picks users' servers (``-1000..1000``): when the host itself runs out of
        memory, it takes a user's server before the hub and the proxy (which stay at 0). Default: 500.
        """,
    )

    shm_size = Unicode(
        "512m",
        config=True,
        help="""
        Size of ``/dev/shm``. Docker's 64m default is too small for browsers and PyTorch data
        loaders running in the desktop. Example: ``"2g"``. Empty: Docker's default.
        """,
    )

    pids_limit = Int(
        4096,
        config=True,
        help="""
        Most processes (and threads) one container may run, so that a fork bomb in one desktop
        cannot exhaust the host. 0 means no limit. Default: 4096.
        """,
    )

    usage_interval = Int(
        30,
        config=True,
        help="""
        Seconds between readings of what each running server uses (memory, CPU, GPU use and health; its home's
        size every tenth reading), shown on the admin page and as ``devdock_server_*`` gauges on
        ``/hub/metrics``. 0: off.
        Default: 30.
        """,
    )

    hub_data_dir = Unicode(
        config=True,
        help="""
        The hub's data folder (its database, cookie secret and SSH keys). When less than ``hub_min_free_mb`` is
        free there, servers do not start (a full disk would make the hub's database writes fail), and the hub's
        log and admin page say so. Default: the hub's working folder (``DEVDOCK_DATA_DIR`` in devdock's config).
        """,
    )

    @default("hub_data_dir")
    def _default_hub_data_dir(self):
        return os.getcwd()

    hub_min_free_mb = Int(
        100,
        config=True,
        help="""
        Free space (MiB) the hub's data folder must keep. Below it, servers do not start, the hub's log and admin
        page say the disk is full, and the hub frees its reserve (``hub_disk_reserve_mb``) so that its database can
        still be written (sign-ins, stops) until an admin frees space. 0: no check. Default: 100.
        """,
    )

    hub_disk_reserve_mb = Int(
        64,
        config=True,
        help="""
        Space (MiB) the hub sets aside in its data folder (``.devdock-disk-reserve``) while the disk has room, and
        gives back when the disk fills up: the database never meets a full disk unprepared. 0: no reserve.
        Default: 64.
        """,
    )

    def _free_mb(self) -> int:
        stat = os.statvfs(self.hub_data_dir)
        return stat.f_bavail * stat.f_frsize // (1 << 20)

    @property
    def _reserve_path(self) -> str:
        return os.path.join(self.hub_data_dir, ".devdock-disk-reserve")

    def check_hub_disk(self) -> None:
        """Notice a (nearly) full data folder, give back the reserve, and take it again once there is room."""
        if not self.hub_min_free_mb:
            return
        state = hub_state()
        try:
            free = self._free_mb()
        except OSError as e:
            self.log.error("devdock: cannot read the hub's data folder %s: %s", self.hub_data_dir, e)
            return
        if free < self.hub_min_free_mb:
            if not state.disk_full:
                self.log.error("devdock: %s", self._disk_sentence(free))
            state.disk_full = True
            if os.path.exists(self._reserve_path):
                os.unlink(self._reserve_path)
                self.log.warning(
                    "devdock: gave back the %s MiB disk reserve, so that the hub's database can still be written",
                    self.hub_disk_reserve_mb,
                )
        elif free >= self.hub_min_free_mb + self.hub_disk_reserve_mb:
            if state.disk_full:
                self.log.info("devdock: the hub's disk has room again (%s MiB free)", free)
            state.disk_full = False
            if self.hub_disk_reserve_mb and not os.path.exists(self._reserve_path):
                with open(self._reserve_path, "wb") as f:
                    os.posix_fallocate(f.fileno(), 0, self.hub_disk_reserve_mb << 20)

    def _disk_sentence(self, free: int) -> str:
        return (
            f"The hub's disk is full: {free} MiB free in {self.hub_data_dir}, where its database lives (it needs "
            f"{self.hub_min_free_mb} MiB). Servers cannot start until an admin frees space; nothing was changed."
        )

    def hub_disk_problem(self) -> str:
        """A sentence while the hub's data folder is (nearly) full, else empty."""
        self.check_hub_disk()
        if not hub_state().disk_full:
            return ""
        try:
            return self._disk_sentence(self._free_mb())
        except OSError as e:
            return f"The hub cannot read its data folder {self.hub_data_dir} ({e})."

    # --- watching the servers (once per hub) ---------------------------------------------------

    def start_watching(self) -> None:
        """Read usage periodically and listen for out-of-memory kills: once per hub, from inside its event loop."""
        state = hub_state()
        if f"watch:{self.hub_id}" in state.done:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not inside the hub (a script, a unit test)
        state.done.add(f"watch:{self.hub_id}")
        threading.Thread(target=self._watch_oom_kills, name="devdock-oom", daemon=True).start()
        if self.usage_interval:
            asyncio.ensure_future(self._usage_loop())

    def _watch_oom_kills(self) -> None:
        """The engine's ``oom`` events of this hub's containers (blocking: its own thread)."""
        filters = {"type": "container", "event": "oom", "label": f"{naming.HUB_LABEL}={self.hub_id}"}
        while True:
            try:
                for event in self.client.events(decode=True, filters=filters):
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    key = naming.server_key_from_labels(attributes)
                    if key is None:
                        continue
                    hub_state().oom[key] = datetime.fromtimestamp(event.get("time", time.time()), UTC)
                    user, _, server = key.rpartition("/")
                    metrics.SERVER_OOM_KILLS.labels(user, server).inc()
                    self.log.warning("devdock: %s ran out of memory: the kernel killed a process in it", key)
            except Exception as e:  # noqa: BLE001 - the engine restarted: listen again
                self.log.warning("devdock: listening for out-of-memory kills failed (%s); again in 5 s", e)
                time.sleep(5)

    async def _usage_loop(self) -> None:
        rounds = 0
        while True:
            self.check_hub_disk()
            try:
                await self.read_usage(homes=rounds % 10 == 0)
            except Exception as e:  # noqa: BLE001 - the next round tries again
                self.log.warning("devdock: reading what servers use failed: %s", e)
            rounds += 1
            await asyncio.sleep(self.usage_interval)

    async def read_usage(self, homes: bool = True) -> None:
        """One reading: memory and CPU of every running server of this hub (and, with ``homes``, their homes)."""
        containers = await self.docker(
            "containers", filters={"label": f"{naming.HUB_LABEL}={self.hub_id}", "status": "running"}
        )
        keyed = [(naming.server_key_from_labels(c.get("Labels")), c["Id"]) for c in containers]
        keyed = [(k, i) for k, i in keyed if k is not None]
        samples = await asyncio.gather(
            *(self.docker("stats", i, stream=False) for _, i in keyed), return_exceptions=True
        )
        state = hub_state()
        fresh = {}
        for (key, _), sample in zip(keyed, samples, strict=True):
            if isinstance(sample, dict):
                fresh[key] = usage.from_stats(sample)
        for gone in set(state.usage) - set(fresh):
            user, _, server = gone.rpartition("/")
            for gauge in (metrics.SERVER_MEMORY, metrics.SERVER_MEMORY_LIMIT, metrics.SERVER_CPU):
                try:
                    gauge.remove(user, server)
                except KeyError:
                    pass
        state.usage = fresh
        for key, use in fresh.items():
            user, _, server = key.rpartition("/")
            metrics.SERVER_MEMORY.labels(user, server).set(use.memory_bytes)
            metrics.SERVER_MEMORY_LIMIT.labels(user, server).set(use.memory_limit_bytes)
            metrics.SERVER_CPU.labels(user, server).set(use.cpu_cores)
        try:
            await self.read_gpus(containers)
        except Exception as e:  # noqa: BLE001 - GPU readings must never stop the others
            self.log.warning("devdock: reading the GPUs failed: %s", e)
        if homes:
            volumes = await self.docker("volumes", filters={"label": f"{naming.HUB_LABEL}={self.hub_id}"})
            listed = (volumes or {}).get("Volumes") or []
            owners = {v["Name"]: naming.server_key_from_labels(v.get("Labels")) for v in listed}
            sizes = usage.volume_sizes(await self.docker("df"))
            # Docker's df leaves out volumes mounted from a device (homes with a size limit): their servers'
            # own df says what they hold.
            images = {v["Name"] for v in listed if (v.get("Options") or {}).get("type") == "ext4"}
            limits = {}
            for c in containers:
                for mount in c.get("Mounts") or []:
                    if mount.get("Name") in images:
                        found = await self._df_in_container(c["Id"], mount.get("Destination", ""))
                        if found is not None:
                            sizes[mount["Name"]], limits[mount["Name"]] = found
            state.home_bytes = {key: sizes[name] for name, key in owners.items() if key and name in sizes}
            state.home_limit_bytes = {key: limits[name] for name, key in owners.items() if key and name in limits}
            for key, size in state.home_bytes.items():
                user, _, server = key.rpartition("/")
                metrics.SERVER_HOME.labels(user, server).set(size)
                if key in state.home_limit_bytes:
                    metrics.SERVER_HOME_LIMIT.labels(user, server).set(state.home_limit_bytes[key])

    async def _df_in_container(self, container_id: str, path: str) -> tuple[int, int] | None:
        """(bytes used, bytes in all) of the filesystem mounted at ``path`` of a running container (its ``df``)."""
        try:
            run = await self.docker("exec_create", container_id, ["df", "-B1", "--output=used,size", path], user="0")
            used, size = (await self.docker("exec_start", run["Id"])).decode().split()[-2:]
            return int(used), int(size)
        except Exception:  # noqa: BLE001 - a reading, not a reason to fail: the next round tries again
            return None

    @property
    def last_oom(self) -> datetime | None:
        """When the kernel last killed a process of this server for memory (since the hub started)."""
        return hub_state().oom.get(self.server_key)

    @property
    def memory_limit_text(self) -> str:
        return usage.human_bytes(int(self.mem_limit)) if self.mem_limit else "none"

    @property
    def usage_now(self) -> usage.Usage | None:
        return hub_state().usage.get(self.server_key)

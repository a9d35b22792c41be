"""The hub-wide object: what one hub does once, for all its servers (a spawner handles one server).

JupyterHub makes one spawner object per server and gives spawners no hook at its own start or stop. Some work is
the hub's, not any one server's: the thread pool for Docker calls, reconciling the engine with the hub's database
after a restart, the GPU and SSH-port allocators (whose locks every spawn shares), the users' network, watching
what servers use (memory, CPU, homes, GPUs, out-of-memory kills), the hub's disk, and every read of the hub's
database. :class:`DevDockHub` owns it, with a lifecycle of its own: made with the hub's first devdock spawner
(kubespawner's ``ResourceReflector`` is the model), started once (:meth:`DevDockHub.start`), stopped with the hub
process. Spawners reach it as ``spawner.devdock_hub``; the hub's pages (hub.py) through :func:`current`.

Settings are devdock's ``c.DevDockSpawner`` traits, which every server of a hub shares: the hub object copies the
hub-wide ones (:attr:`DevDockHub.settings_names`) from the first spawner when it is made, before any profile
applies, and never calls per-server code. :class:`~devdock_spawner.hubwide_swarm.SwarmHub` is the Swarm variant.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import SimpleNamespace

from docker.errors import APIError, ImageNotFound
from tornado import web
from traitlets import CaselessStrEnum, Int, Unicode
from traitlets.config import LoggingConfigurable

from . import cloud_metadata, metrics, naming, reconcile, usage
from .accounting import Ledger
from .container import last_lines, network_spec
from .guarantees import log_text, missing_guarantees
from .hubwide_gpu import GPUWatch
from .hubwide_homes import HomeHelper
from .hubwide_reservations import Reservations
from .images import missing_image_message
from .ports import PortAllocator, held_ports, host_port_free

#: Every hub object of this process, by (class, hub_id, the hub's config object): one in a real hub.
_hubs: dict[tuple, DevDockHub] = {}


def current() -> DevDockHub | None:
    """This process's hub object (the hub's pages use it; None before the first devdock spawner)."""
    return next(reversed(_hubs.values()), None) if _hubs else None


def forget_all() -> None:
    """Stop and forget every hub object (tests that make many hubs' worth of spawners in one process)."""
    for hub in list(_hubs.values()):
        hub.stop()
    _hubs.clear()


class DevDockHub(GPUWatch, Reservations, HomeHelper, LoggingConfigurable):
    """Everything one hub does once for all its servers, on one Docker engine."""

    #: The Docker objects users' servers are (DockerSpawner's ``object_type``).
    object_type = "container"
    #: Where the spawn form says the GPUs are.
    gpu_scope = "on this server"
    #: Whether a start may wait in line for GPUs (gpu_queue.py); a Swarm's scheduler picks GPUs itself.
    gpu_line = True

    #: The spawner settings the hub's work reads; the same for every server of a hub.
    settings_names = (
        "hub_id", "prefix", "docker_workers", "extra_labels", "unknown_servers", "usage_interval",
        "network_name", "create_network", "isolate_containers",
        "block_cloud_metadata", "cloud_metadata_addresses", "firewall_helper_image",
        "hub_data_dir", "hub_min_free_mb", "hub_disk_reserve_mb", "accounting_url",
        "ssh_bind_address", "ssh_probe_host_ports", "image",
        "gpu_inventory", "gpu_discovery", "gpu_mode", "gpu_max_users_per_gpu", "gpu_monitor_command",
        "gpu_monitor_proc", "gpu_kernel_log", "gpu_health_checks", "gpu_busy_percent",
        "gpu_queue_order", "gpu_fair_share_half_life", "gpu_reservation_timezone",
        "gpu_reservation_rules", "cull_warning",
    )  # fmt: skip

    @classmethod
    def of(cls, spawner) -> DevDockHub:
        """The hub object of ``spawner``'s hub, made from its settings the first time."""
        key = (cls, spawner.hub_id, id(spawner.config))
        hub = _hubs.get(key)
        if hub is None:
            hub = _hubs[key] = cls(spawner)
        return hub

    def __init__(self, spawner, **kwargs):
        super().__init__(log=spawner.log, **kwargs)
        self._config_object = spawner.config  # kept, so that the registry's id() of it stays unique
        self.settings = SimpleNamespace(**{name: getattr(spawner, name) for name in self.settings_names})
        self.config_for_guarantees = spawner.config
        # DockerSpawner's client (one per spawner class, from the site's connection settings), made at the first
        # Docker call: a hub must start, and keep its servers, while the engine does not answer.
        self._client, self._client_of = None, spawner
        #: the hub's database session (JupyterHub gives every user object the same one; None outside a hub)
        self.db = getattr(spawner.user, "db", None)
        self.executor = ThreadPoolExecutor(max(1, self.settings.docker_workers), thread_name_prefix="devdock-docker")
        self._locks: dict[str, asyncio.Lock] = {}
        self._done: set[str] = set()
        self._started = False
        self._stopping = threading.Event()
        self._tasks: list[asyncio.Task] = []
        #: servers of this hub between the start of ``start()`` and its end
        self.starting = 0
        #: running objects the database does not know (reconcile.Found), left running: shown on the admin page
        self.unknown_servers: list = []
        #: the last out-of-memory kill inside each server: {server key: datetime}
        self.oom: dict = {}
        #: what each running server uses {key: usage.Usage}, its home's size and limit {key: bytes}
        self.usage: dict = {}
        self.home_bytes: dict = {}
        self.home_limit_bytes: dict = {}
        #: the hub's data folder is (nearly) full: servers do not start until there is room again
        self.disk_full = False
        #: SSH port allocators, by range; host ports of other tools' stopped containers (ports.held_ports)
        self._port_allocators: dict = {}
        self._foreign_ports: dict = {}
        self._init_gpu_watch()
        self._init_home_helper()
        self._init_reservations(spawner)
        #: the accounting database (None until first asked, or when off or broken), and each running server's row
        self._ledger = None
        self.accounting_runs: dict[str, int] = {}
        self._last_reading: dict[str, float] = {}
        atexit.register(self.stop)
        missing = missing_guarantees(spawner.config)
        if missing:
            self.log.warning("%s", log_text(missing))

    @property
    def ledger(self) -> Ledger | None:
        """The accounting database (accounting.py), opened at first use; None when off or not to be opened."""
        url = self.settings.accounting_url or (
            f"sqlite:///{os.path.join(self.settings.hub_data_dir, 'devdock-accounting.sqlite')}"
        )
        if self._ledger is None and url != "off" and self.once("ledger"):
            try:
                self._ledger = Ledger(url)
            except Exception as e:  # noqa: BLE001 - the hub and its servers run on without accounting
                self.log.error("devdock: the accounting database %s cannot be used (%s): no accounting", url, e)
        return self._ledger

    def account_readings(self, fresh: dict) -> None:
        """One usage reading into each running server's accounting row (CPU, memory, GPU busy)."""
        ledger, now = self._ledger, time.monotonic()
        if ledger is None:
            return
        for key, use in fresh.items():
            run_id, last = self.accounting_runs.get(key), self._last_reading.get(key)
            self._last_reading[key] = now
            if not run_id or last is None:
                continue
            gpus = self.allocator.held_by(key) if self.allocator is not None else []
            gpu_use = self.gpu_use.get(key)
            busy = gpu_use.utilization if gpu_use is not None and gpus else None
            try:
                ledger.reading(run_id, now - last, use.cpu_cores, use.memory_bytes, busy, len(gpus))
            except Exception as e:  # noqa: BLE001 - a reading lost, not a reason to stop reading
                self.log.warning("devdock: accounting reading of %s failed: %s", key, e)
        for gone in set(self._last_reading) - set(fresh):
            del self._last_reading[gone]

    @property
    def client(self):
        if self._client is None:
            self._client, self._client_of = self._client_of.client, None
        return self._client

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Once, before the hub's first allocation: reconcile, then start watching (idempotent)."""
        async with self.lock("start"):
            if self._started:
                return
            await self.reconcile()
            self._started = True
            self._start_watching()

    def stop(self) -> None:
        """Stop watching and let the Docker threads go (the hub process is ending)."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self.executor.shutdown(wait=False)
        self.close_kernel_log()

    def refuse_unsupported(self, spawner) -> None:
        """An HTTP 500 with a sentence for a server setting this engine cannot honour, before anything is made."""

    def lock(self, name: str) -> asyncio.Lock:
        """A hub-wide asyncio lock, made on first use (inside the hub's event loop)."""
        if name not in self._locks:
            self._locks[name] = asyncio.Lock()
        return self._locks[name]

    def once(self, name: str) -> bool:
        """True the first time ``name`` is asked for, False after (things said or made once per hub)."""
        if name in self._done:
            return False
        self._done.add(name)
        return True

    async def docker(self, method: str, *args, **kwargs):
        """A Docker API call in the hub's thread pool (the same seam as DockerSpawner's ``docker()``)."""
        return await asyncio.wrap_future(self.executor.submit(getattr(self.client, method), *args, **kwargs))

    # --- reconciliation ----------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Compare this hub's Docker objects with its database (:func:`devdock_spawner.reconcile.plan` decides)."""
        decided = reconcile.plan(
            await self.find_own_objects(), self.running_server_keys(), self.settings.unknown_servers
        )
        for found in decided.remove:
            self.log.warning(
                "devdock: removing orphaned %s %s: no running server of this hub's database is %s",
                self.object_type, found.name, found.key,
            )  # fmt: skip
            await self.remove_found(found)
        for found in decided.keep_unknown:
            self.log.warning(
                "devdock: %s %s of %s runs but this hub's database does not know it (a new or restored "
                "database?): left running, its GPUs %s and SSH port %s held; the user's next start replaces "
                "it, or an admin removes it",
                self.object_type, found.name, found.key, list(found.gpus) or "none", found.ssh_port or "none",
            )  # fmt: skip
        self.unknown_servers = list(decided.keep_unknown)

    def running_server_keys(self) -> set[str] | None:
        """``user/server`` of every server the hub database says is running (None: no database here)."""
        if self.db is None:
            return None
        from jupyterhub import orm  # the hub's own models; imported here, where a hub runs

        return {
            naming.server_key(s.user.name, s.name or "")
            for s in self.db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None))
            if s.user is not None
        }

    def _own_label(self) -> dict:
        return {"label": f"{naming.HUB_LABEL}={self.settings.hub_id}"}

    async def find_own_objects(self) -> list[reconcile.Found]:
        """This hub's containers (users' servers only), running or not."""
        containers = await self.docker("containers", all=True, filters=self._own_label())
        found = []
        for c in containers:
            key = naming.server_key_from_labels(c.get("Labels"))
            if key is not None:
                found.append(reconcile.container_found(c, key, naming.GPU_LABEL, naming.SSH_PORT_LABEL))
        return found

    async def remove_found(self, found: reconcile.Found) -> None:
        try:
            await self.docker("remove_container", found.id, force=True)
        except APIError as e:
            if e.status_code != 404:
                raise

    # --- the users' network ------------------------------------------------------------------

    async def ensure_network(self) -> None:
        """Create the users' network once, if it is missing and ours to create; keep cloud metadata off it."""
        name = self.settings.network_name
        if name in ("host", "none"):
            return
        if self.settings.create_network and name != "bridge":
            await self._create_network()
        await self._block_cloud_metadata()

    async def _create_network(self) -> None:
        name = self.settings.network_name
        async with self.lock("network"):
            try:
                await self.docker("inspect_network", name)
                return
            except APIError as e:
                if e.status_code != 404:
                    raise
            self.log.info("Creating Docker network %s (isolated: %s)", name, self.settings.isolate_containers)
            spec = network_spec(name, self.settings.isolate_containers, self.settings.extra_labels)
            await self.docker("create_network", **spec)

    async def _block_cloud_metadata(self) -> None:
        """Once per hub and network: the ``DOCKER-USER`` rules of :mod:`devdock_spawner.cloud_metadata`."""
        settings = self.settings
        if not settings.block_cloud_metadata or not settings.cloud_metadata_addresses:
            return
        name = settings.network_name
        async with self.lock("network"):
            if f"cloud-metadata:{name}" in self._done:
                return
            info = await self.docker("inspect_network", name)
            subnets = [c["Subnet"] for c in (info.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
            try:
                script = cloud_metadata.block_script(name, subnets, settings.cloud_metadata_addresses)
            except ValueError as e:
                raise web.HTTPError(500, f"devdock cannot block cloud metadata on {name}: {e}") from e
            host = self.client.create_host_config(
                network_mode="host",
                cap_drop=["ALL"],
                cap_add=["NET_ADMIN", "NET_RAW"],
                security_opt=["no-new-privileges:true"],
                read_only=True,
                tmpfs={"/run": "size=1m", "/tmp": "size=1m"},  # iptables-legacy's lock file
            )
            failure = (
                f"devdock could not keep users' containers on {name} from the cloud's metadata service "
                "(c.DevDockSpawner.block_cloud_metadata = False starts servers without that rule)"
            )
            used = await self.one_shot(
                settings.firewall_helper_image, ["sh", "-c", script], host, "cloud-metadata-block", failure
            )
            self.log.info("devdock: users' containers on %s (%s) cannot reach %s (DOCKER-USER in %s)",
                          name, ", ".join(subnets), ", ".join(settings.cloud_metadata_addresses),
                          used.strip())  # fmt: skip
            self.once(f"cloud-metadata:{name}")

    async def one_shot(
        self, image: str, entrypoint: list[str], host: dict, role: str, failure: str, purpose: str = ""
    ) -> str:
        """Run a helper container to its end and remove it; its output, or an HTTP 500 with ``failure``.

        A helper image that is not on the engine is a 503 that says which image does ``purpose`` and how to build it
        (Docker's own "No such image" would reach the user as JupyterHub's "Unhandled error starting server").
        """
        labels = {naming.MANAGED_LABEL: "true", naming.ROLE_LABEL: role, **self.settings.extra_labels}
        try:
            container = await self.docker(
                "create_container", image, entrypoint=entrypoint, host_config=host, labels=labels
            )
        except ImageNotFound as e:
            message = missing_image_message(image, purpose)
            self.log.error("devdock: %s: %s", failure, message)
            raise web.HTTPError(503, f"{failure}. {message}") from e
        try:
            await self.docker("start", container["Id"])
            result = await self.docker("wait", container["Id"], timeout=3600)
            logs = await self.docker("logs", container["Id"], stdout=True, stderr=result.get("StatusCode") != 0)
            if result.get("StatusCode") != 0:
                self.log.error("devdock: %s helper failed: %s", role, last_lines(logs))
                raise web.HTTPError(500, f"{failure}: {last_lines(logs)}")
        finally:
            await self.docker("remove_container", container["Id"], force=True)
        return logs.decode(errors="replace") if isinstance(logs, bytes) else logs

    # --- SSH ports ---------------------------------------------------------------------------

    def port_allocator(self, port_range: tuple[int, int]) -> PortAllocator:
        """One allocator per port range for the whole hub, so that every spawn shares its lock; ports of servers
        that are stopped now live only in the hub database: they are claimed first."""
        allocator = self._port_allocators.get(tuple(port_range))
        if allocator is None:
            bind, probe = self.settings.ssh_bind_address, self.settings.ssh_probe_host_ports
            allocator = PortAllocator(*port_range, (lambda port: host_port_free(bind, port)) if probe else None)
            self._port_allocators[tuple(port_range)] = allocator
            for key, port in self._stored_ssh_ports():
                allocator.remember(key, port)
        return allocator

    def _stored_ssh_ports(self) -> list[tuple[str, int]]:
        if self.db is None:
            return []
        from jupyterhub import orm

        return [
            (naming.server_key(s.user.name, s.name or ""), int((s.state or {})["ssh_port"]))
            for s in self.db.query(orm.Spawner)
            if (s.state or {}).get("ssh_port") and s.user is not None
        ]

    def legacy_slug_shared(self, username: str) -> bool:
        """Whether another hub user had ``username``'s pre-0.2 slug (then the old key file of that slug is nobody's)."""
        if self.db is None:
            return False
        from jupyterhub import orm

        legacy = naming.legacy_slug(username)
        return any(u.name != username and naming.legacy_slug(u.name) == legacy for u in self.db.query(orm.User))

    async def held_host_ports(self) -> dict[int, str | None]:
        """Host ports in use: {port: owning server key, or None for anything else} (see ports.held_ports)."""
        return await held_ports(self.docker, naming.SSH_PORT_LABEL, self._foreign_ports)

    # --- the hub's disk ----------------------------------------------------------------------

    def _free_mb(self) -> int:
        stat = os.statvfs(self.settings.hub_data_dir)
        return stat.f_bavail * stat.f_frsize // (1 << 20)

    @property
    def _reserve_path(self) -> str:
        return os.path.join(self.settings.hub_data_dir, ".devdock-disk-reserve")

    def check_disk(self) -> None:
        """Notice a (nearly) full data folder, give back the reserve, and take it again once there is room."""
        settings = self.settings
        if not settings.hub_min_free_mb:
            return
        try:
            free = self._free_mb()
        except OSError as e:
            self.log.error("devdock: cannot read the hub's data folder %s: %s", settings.hub_data_dir, e)
            return
        if free < settings.hub_min_free_mb:
            if not self.disk_full:
                self.log.error("devdock: %s", self._disk_sentence(free))
            self.disk_full = True
            if os.path.exists(self._reserve_path):
                os.unlink(self._reserve_path)
                self.log.warning(
                    "devdock: gave back the %s MiB disk reserve, so that the hub's database can still be written",
                    settings.hub_disk_reserve_mb,
                )
        elif free >= settings.hub_min_free_mb + settings.hub_disk_reserve_mb:
            if self.disk_full:
                self.log.info("devdock: the hub's disk has room again (%s MiB free)", free)
            self.disk_full = False
            if settings.hub_disk_reserve_mb and not os.path.exists(self._reserve_path):
                with open(self._reserve_path, "wb") as f:
                    os.posix_fallocate(f.fileno(), 0, settings.hub_disk_reserve_mb << 20)

    def _disk_sentence(self, free: int) -> str:
        return (
            f"The hub's disk is full: {free} MiB free in {self.settings.hub_data_dir}, where its database lives (it "
            f"needs {self.settings.hub_min_free_mb} MiB). Servers cannot start until an admin frees space; nothing "
            "was changed."
        )

    def disk_problem(self) -> str:
        """A sentence while the hub's data folder is (nearly) full, else empty."""
        self.check_disk()
        if not self.disk_full:
            return ""
        try:
            return self._disk_sentence(self._free_mb())
        except OSError as e:
            return f"The hub cannot read its data folder {self.settings.hub_data_dir} ({e})."

    # --- watching the servers ----------------------------------------------------------------

    def _start_watching(self) -> None:
        """Read usage periodically and listen for out-of-memory kills (from inside the hub's event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not inside the hub (a script, a unit test)
        threading.Thread(target=self._watch_oom_kills, name="devdock-oom", daemon=True).start()
        if self.settings.usage_interval:
            self._tasks.append(asyncio.ensure_future(self._usage_loop()))
        self._start_telling_ends()

    def _watch_oom_kills(self) -> None:
        """The engine's ``oom`` events of this hub's containers (blocking: its own thread)."""
        filters = {"type": "container", "event": "oom", **self._own_label()}
        while not self._stopping.is_set():
            try:
                for event in self.client.events(decode=True, filters=filters):
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    key = naming.server_key_from_labels(attributes)
                    if key is None:
                        continue
                    self.oom[key] = datetime.fromtimestamp(event.get("time", time.time()), UTC)
                    user, _, server = key.rpartition("/")
                    metrics.SERVER_OOM_KILLS.labels(user, server).inc()
                    self.log.warning("devdock: %s ran out of memory: the kernel killed a process in it", key)
            except Exception as e:  # noqa: BLE001 - the engine restarted: listen again
                self.log.warning("devdock: listening for out-of-memory kills failed (%s); again in 5 s", e)
                self._stopping.wait(5)

    async def _usage_loop(self) -> None:
        rounds = 0
        while True:
            self.check_disk()
            try:
                await self.read_usage(homes=rounds % 10 == 0)
            except Exception as e:  # noqa: BLE001 - the next round tries again
                self.log.warning("devdock: reading what servers use failed: %s", e)
            rounds += 1
            await asyncio.sleep(self.settings.usage_interval)

    async def read_usage(self, homes: bool = True) -> None:
        """One reading: memory and CPU of every running server of this hub (and, with ``homes``, their homes)."""
        containers = await self.docker("containers", filters={**self._own_label(), "status": "running"})
        keyed = [(naming.server_key_from_labels(c.get("Labels")), c["Id"]) for c in containers]
        keyed = [(k, i) for k, i in keyed if k is not None]
        samples = await asyncio.gather(
            *(self.docker("stats", i, stream=False) for _, i in keyed), return_exceptions=True
        )
        fresh = {key: usage.from_stats(s) for (key, _), s in zip(keyed, samples, strict=True) if isinstance(s, dict)}
        for gone in set(self.usage) - set(fresh):
            user, _, server = gone.rpartition("/")
            for gauge in (metrics.SERVER_MEMORY, metrics.SERVER_MEMORY_LIMIT, metrics.SERVER_CPU):
                try:
                    gauge.remove(user, server)
                except KeyError:
                    pass
        self.usage = fresh
        self.account_readings(fresh)
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
            await self._read_homes(containers)

    async def _read_homes(self, containers: list[dict]) -> None:
        volumes = await self.docker("volumes", filters=self._own_label())
        listed = (volumes or {}).get("Volumes") or []
        owners = {v["Name"]: naming.server_key_from_labels(v.get("Labels")) for v in listed}
        sizes = usage.volume_sizes(await self.docker("df"))
        # Docker's df leaves out volumes mounted from a device (homes with a size limit): their servers' own df
        # says what they hold.
        images = {v["Name"] for v in listed if (v.get("Options") or {}).get("type") == "ext4"}
        limits = {}
        for c in containers:
            for mount in c.get("Mounts") or []:
                if mount.get("Name") in images:
                    found = await self._df_in_container(c["Id"], mount.get("Destination", ""))
                    if found is not None:
                        sizes[mount["Name"]], limits[mount["Name"]] = found
        self.home_bytes = {key: sizes[name] for name, key in owners.items() if key and name in sizes}
        self.home_limit_bytes = {key: limits[name] for name, key in owners.items() if key and name in limits}
        for key, size in self.home_bytes.items():
            user, _, server = key.rpartition("/")
            metrics.SERVER_HOME.labels(user, server).set(size)
            if key in self.home_limit_bytes:
                metrics.SERVER_HOME_LIMIT.labels(user, server).set(self.home_limit_bytes[key])

    async def _df_in_container(self, container_id: str, path: str) -> tuple[int, int] | None:
        """(bytes used, bytes in all) of the filesystem mounted at ``path`` of a running container (its ``df``)."""
        try:
            run = await self.docker("exec_create", container_id, ["df", "-B1", "--output=used,size", path], user="0")
            used, size = (await self.docker("exec_start", run["Id"])).decode().split()[-2:]
            return int(used), int(size)
        except Exception:  # noqa: BLE001 - a reading, not a reason to fail: the next round tries again
            return None

    def count_as_activity(self, keys: list[str]) -> None:
        """These servers are in use (their GPUs are busy): the idle culler reads the hub's last_activity."""
        if self.db is None:
            return
        from jupyterhub import orm

        now = datetime.now(UTC).replace(tzinfo=None)  # the hub's database keeps naive UTC times
        for key in keys:
            name, _, server = key.rpartition("/")
            row = (
                self.db.query(orm.Spawner)
                .join(orm.User, orm.Spawner.user_id == orm.User.id)
                .filter(orm.User.name == name, orm.Spawner.name == server)
                .one_or_none()
            )
            if row is not None and row.server_id is not None:
                row.last_activity = now
                if row.user.last_activity is None or row.user.last_activity < now:
                    row.user.last_activity = now
        self.db.commit()


class HubSettingsMixin(LoggingConfigurable):
    """The spawner's settings that are the hub's (one value per hub), and its way to the hub-wide object."""

    hub_id = Unicode(
        "devdock",
        config=True,
        help="""
        Name of this hub, written on its containers and volumes (label ``io.devdock.hub``). A hub only
        reconciles containers with its own name, so that hubs sharing one Docker engine leave each
        other alone. Default: ``devdock``.
        """,
    )

    unknown_servers = CaselessStrEnum(
        list(reconcile.POLICIES),
        "keep",
        config=True,
        help="""
        What the hub does, once after it starts, with its containers that run although its database does not
        list their server as running: after a crash in the middle of a spawn, and whenever the database is new,
        empty or restored from an older backup. ``keep`` (the default) leaves them running, holds their GPUs
        and SSH ports so nobody gets them twice, and lists them in the hub's log and on the admin page; the
        user's next start replaces theirs (the home is a volume), or an admin removes it. ``remove`` removes
        them, as devdock 0.1 did. Containers that do not run any more are removed either way.
        """,
    )

    docker_workers = Int(
        8,
        config=True,
        help="""
        Threads for Docker API calls, shared by all servers. DockerSpawner uses one, so twenty users
        logging in at once wait for each other's every Docker call; devdock defaults to 8. Example: 16
        on a large host. Minimum 1.
        """,
    )

    accounting_url = Unicode(
        config=True,
        help="""
        The accounting database (devdock_spawner/accounting.py: every server's run, its GPUs, GPU-, CPU-seconds
        and why it ended), as an SQLAlchemy URL: ``postgresql://devdock:...@db/devdock`` for a site's PostgreSQL
        (install ``psycopg2``). Default: ``sqlite:///<hub_data_dir>/devdock-accounting.sqlite``, beside the
        hub's own database. "off": no accounting.
        """,
    )

    #: The hub-wide object's class (the Swarm spawner's is :class:`~devdock_spawner.hubwide_swarm.SwarmHub`).
    hub_class = DevDockHub

    @property
    def devdock_hub(self) -> DevDockHub:
        """The hub-wide object of this server's hub: allocators, reconciliation, watchers (devdock_spawner.hubwide)."""
        return self.hub_class.of(self)

    @property
    def executor(self):
        """One thread pool of ``docker_workers`` threads for the whole hub (DockerSpawner has one thread)."""
        return self.devdock_hub.executor

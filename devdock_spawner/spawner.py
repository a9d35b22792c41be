"""DevDockSpawner: one GUI dev container per user (and per named server) on a Docker engine."""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import socket
import time

from docker.errors import APIError, DockerException
from dockerspawner import DockerSpawner
from requests.exceptions import ConnectionError as RequestsConnectionError
from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, Int, List, Tuple, Unicode, default, validate

from . import gpu as gpus
from . import metrics, naming
from ._version import __version__
from .container import ContainerSettings, UnsafeConfiguration, container_spec, network_spec
from .ports import NoFreePort, PortAllocator, held_ports, host_port_free, port_key
from .profiles import OVERRIDABLE, InvalidOptions, Profile, load_profiles, validate_user_options, visible_profiles
from .ssh import InvalidKey, KeyStore, parse_keys

SSH_CONTAINER_PORT = 2222
SSH_PORT_LABEL = f"{naming.LABEL_PREFIX}.ssh-port"


class DevDockSpawner(DockerSpawner):
    """A personal Linux desktop, JupyterLab and a terminal in one container per user.

    Builds on :class:`dockerspawner.DockerSpawner` (its ``self.docker(...)`` seam, image, volume and
    limit settings all apply) and changes the defaults to what a shared GPU server needs:

    - the devdock desktop image, with the desktop behind the Hub's auth at ``/user/<name>/desktop/``;
    - a persistent home volume per user and named server, mounted at ``/home/<login>``;
    - containers removed on stop (the home stays), on a network of their own, hardened: all
      capabilities dropped but the entrypoint's, ``no-new-privileges``, pid and shm limits;
    - names and labels that say whom each container and volume belongs to.
    """

    # --- image and naming -------------------------------------------------------------------

    @default("image")
    def _default_image(self):
        """``devdock/desktop:latest``, the image ``scripts/build-images.sh`` builds."""
        return "devdock/desktop:latest"

    @default("prefix")
    def _default_prefix(self):
        """``devdock``: container names start with it."""
        return "devdock"

    @default("name_template")
    def _default_name_template(self):
        """``{prefix}-{slug}`` or ``{prefix}-{slug}_{server_slug}`` (see devdock_spawner.naming)."""
        return "{devdock_object_name}"

    @default("remove")
    def _default_remove(self):
        """True: containers are removed on stop; the home volume stays."""
        return True

    @default("default_url")
    def _default_default_url(self):
        """``/lab``: users land in JupyterLab, whose launcher offers the desktop."""
        return "/lab"

    @default("start_timeout")
    def _default_start_timeout(self):
        """120 s: a desktop image on a busy GPU box can take longer than JupyterHub's 60 s."""
        return 120

    @default("http_timeout")
    def _default_http_timeout(self):
        """90 s, for the same reason."""
        return 90

    extra_labels = Dict(
        config=True,
        help="""
        Extra labels for every container and volume devdock creates, on top of devdock's own
        ``io.devdock.*`` labels (owner, server, login, version).

        Example: ``{"com.example.cost-centre": "physics"}``. Default: none.
        """,
    )

    login_uid = Int(
        1000,
        config=True,
        help="""
        uid (and gid) of the user's account inside the container. Every user has a container of
        their own, so one uid serves all; change it to match files on shared host mounts.
        Must be at least 1000. Default: 1000.
        """,
    )

    # --- network -----------------------------------------------------------------------------

    @default("network_name")
    def _default_network_name(self):
        """``devdock``: a bridge network of its own, created when missing (see ``create_network``)."""
        return "devdock"

    @default("use_internal_ip")
    def _default_use_internal_ip(self):
        """True: the proxy reaches containers on the network; no host port per server."""
        return True

    isolate_containers = Bool(
        True,
        config=True,
        help="""
        When devdock creates ``network_name``, turn off traffic between containers on it
        (``enable_icc=false``): one user's container cannot reach another's JupyterLab, desktop or
        sshd. The hub, on the host, still reaches every container, and containers reach the hub API.
        Set False when the hub itself runs in a container on that network (compose does its own
        networks). Default: True.
        """,
    )

    create_network = Bool(
        True,
        config=True,
        help="""
        Create ``network_name`` (a bridge network labelled ``io.devdock.managed``) when it does not
        exist. Set to False when the network is managed elsewhere (compose, Swarm). Default: True.
        """,
    )

    # --- resources ---------------------------------------------------------------------------

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

    keep_failed_containers = Bool(
        False,
        config=True,
        help="""
        Keep the container of a start that failed (stopped), so that an admin can ``docker inspect``
        and ``docker logs`` it. It is removed at the user's next start. Default: False (removed at
        once, so nothing is left behind).
        """,
    )

    stop_grace_seconds = Int(
        5,
        config=True,
        help="""
        Seconds between SIGTERM and SIGKILL when a server stops. JupyterLab and the desktop exit
        in well under a second; the default 5 keeps stops fast. Docker's own default is 10.
        """,
    )

    # --- SSH ---------------------------------------------------------------------------------

    ssh_enabled = Bool(
        True,
        config=True,
        help="""
        Give every server an SSH port: sshd runs in the container as the user (key-only, no root,
        no passwords) and container port 2222 is published on a host port from ``ssh_port_range``.
        Default: True.
        """,
    )

    ssh_port_range = Tuple(
        Int(),
        Int(),
        default_value=(42000, 42999),
        config=True,
        help="""
        Host ports for SSH, inclusive. Each user and named server keeps its port across stops, starts
        and hub restarts. Open this range in the host firewall. Example: ``(2200, 2299)``.
        Default: ``(42000, 42999)``.
        """,
    )

    ssh_bind_address = Unicode(
        "0.0.0.0",
        config=True,
        help="""
        Host address the SSH ports are published on. ``0.0.0.0`` (the default) for a real host;
        ``127.0.0.1`` to reach them only from the host itself (tests, or SSH through a bastion).
        """,
    )

    ssh_host = Unicode(
        config=True,
        help="""
        Host name users should connect to, shown in ``ssh -p PORT login@HOST`` lines.
        Default: this machine's fully qualified name. Example: ``"gpu01.example.org"``.
        """,
    )

    @default("ssh_host")
    def _default_ssh_host(self):
        return socket.getfqdn()

    ssh_keys_dir = Unicode(
        config=True,
        help="""
        Folder where the hub keeps each user's SSH public keys (one file per user, written by the
        ``/hub/ssh`` page or the ``ssh_keys`` spawn option). Default: ``ssh-keys`` in the hub's
        working directory.
        """,
    )

    @default("ssh_keys_dir")
    def _default_ssh_keys_dir(self):
        return os.path.abspath("ssh-keys")

    ssh_probe_host_ports = Bool(
        True,
        config=True,
        help="""
        Before handing out an SSH port, check with a local ``bind()`` that no host program listens
        on it. Meaningful when the hub runs on the host; with the hub in a container the check sees
        only the container, so set False there (Docker's own bind error still moves on to the next
        port). Default: True.
        """,
    )

    ssh_tcp_forwarding = CaselessStrEnum(
        ["no", "local", "remote", "yes"],
        "local",
        config=True,
        help="""
        sshd ``AllowTcpForwarding``. ``local`` (the default) is what VS Code Remote-SSH and
        ``ssh -L`` need; ``no`` forbids forwarding; ``remote``/``yes`` also allow ``ssh -R``.
        """,
    )

    ssh_x11_forwarding = Bool(False, config=True, help="Allow ``ssh -X``. Default: False.")

    ssh_agent_forwarding = Bool(False, config=True, help="Allow ``ssh -A``. Default: False.")

    @validate("ssh_port_range")
    def _validate_ssh_port_range(self, proposal):
        start, end = proposal.value
        if not 1024 <= start <= end <= 65535:
            raise ValueError(f"ssh_port_range must be two ports 1024 <= start <= end <= 65535, not {proposal.value}")
        return proposal.value

    #: The host SSH port of this server (kept in state across stops; 0: none yet).
    ssh_port = Int(0)

    _allocators: dict = {}
    #: host ports of other tools' stopped containers, by container id (see ports.held_ports)
    _foreign_port_cache: dict = {}

    @property
    def port_allocator(self) -> PortAllocator:
        """One allocator per port range for the whole hub, so every spawner shares its lock."""
        start, end = self.ssh_port_range
        allocator = self._allocators.get((start, end))
        if allocator is None:
            probe = (lambda port: host_port_free(self.ssh_bind_address, port)) if self.ssh_probe_host_ports else None
            allocator = self._allocators[(start, end)] = PortAllocator(start, end, probe)
            self._seed_ports_from_hub(allocator)
        return allocator

    def _seed_ports_from_hub(self, allocator: PortAllocator):
        """Ports of servers that are stopped now live only in the hub database: claim them first."""
        db = getattr(self.user, "db", None)
        if db is None:
            return
        from jupyterhub import orm

        for orm_spawner in db.query(orm.Spawner):
            port = (orm_spawner.state or {}).get("ssh_port")
            if port and orm_spawner.user is not None:
                allocator.remember(port_key(orm_spawner.user.name, orm_spawner.name or ""), int(port))

    @property
    def ssh_key(self) -> str:
        return port_key(self.user.name, self.name or "")

    @property
    def ssh_command(self) -> str:
        """The line users paste into a terminal."""
        return f"ssh -p {self.ssh_port} {self.login_name}@{self.ssh_host}"

    async def allocate_ssh_port(self) -> int:
        """This server's SSH port, with one Docker API call in the steady state (see ports.held_ports)."""
        held = await held_ports(self.docker, SSH_PORT_LABEL, self._foreign_port_cache)
        try:
            port = self.port_allocator.allocate(self.ssh_key, held, preferred=self.ssh_port or None)
        except NoFreePort as e:
            raise web.HTTPError(503, str(e)) from e
        if port != self.ssh_port and self.ssh_port:
            self.log.warning("SSH port of %s moved from %s to %s", self._log_name, self.ssh_port, port)
        self.ssh_port = port
        return port

    async def push_ssh_keys(self, keys: list) -> None:
        """Replace the keys in the running container at once (root-owned file, read by sshd)."""
        import io
        import tarfile

        data = "".join(key.line() + "\n" for key in keys).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("authorized_keys")
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, 0, 0
            tar.addfile(info, io.BytesIO(data))
        await self.docker("put_archive", self.container_id, "/etc/devdock/ssh", buf.getvalue())

    def ssh_keys_for_spawn(self) -> list:
        """Keys from ``user_options["ssh_keys"]`` (validated and remembered), else the stored ones."""
        store = KeyStore(self.ssh_keys_dir)
        submitted = self.user_options.get("ssh_keys")
        if submitted is None:
            return store.load(self.user_slug)
        try:
            keys = parse_keys(submitted)
        except InvalidKey as e:
            raise web.HTTPError(400, str(e)) from e
        store.save(self.user_slug, keys)
        return keys

    # --- profiles and GPUs -------------------------------------------------------------------

    profile_list = List(
        Dict(),
        config=True,
        help="""
        The choices on the spawn form, in the style of KubeSpawner's ``profile_list``. Each entry:
        ``slug`` (what the form and the REST API send), ``display_name``, ``description``,
        ``default``, ``gpus`` (0, N or ``"all"``), ``gpu_ids`` (pin to these devices),
        ``allowed_groups`` (hub groups that see it) and ``overrides`` (``image``, ``mem_limit``,
        ``cpu_limit``, ``shm_size``, ``pids_limit``, ``environment``). Example::

            [{"slug": "cpu", "display_name": "Desktop", "default": True},
             {"slug": "gpu", "display_name": "1 GPU", "gpus": 1, "overrides": {"mem_limit": "32G"}}]

        Default: one GPU-less "Desktop" profile (then no form is shown).
        """,
    )

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

    #: UUIDs of the GPUs this server holds (state; empty when stopped).
    gpu_ids = List(Unicode())

    _gpu: dict = {"allocator": None, "lock": None}

    async def gpu_allocator(self) -> gpus.GPUAllocator:
        """The hub's GPU allocator: built once from the inventory, then from the running containers."""
        state = self._gpu
        if state["lock"] is None:
            state["lock"] = asyncio.Lock()
        async with state["lock"]:
            if state["allocator"] is None:
                state["allocator"] = await self._build_gpu_allocator()
        return state["allocator"]

    async def _build_gpu_allocator(self) -> gpus.GPUAllocator:
        info = await self.docker("info")
        support = gpus.engine_gpu_support(info)
        self.log.info("devdock GPU support on this engine: %s", support["summary"])
        if self.gpu_inventory:
            inventory = [gpus.GPU.from_config(entry) for entry in self.gpu_inventory]
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
            "devdock GPU inventory: %s", ", ".join(f"{g.index}:{g.name}:{g.uuid}" for g in inventory) or "none"
        )
        allocator = gpus.GPUAllocator(inventory, self.gpu_max_users_per_gpu)
        # A restarted hub finds who holds what on the containers themselves.
        containers = await self.docker("containers", all=True, filters={"label": f"{naming.LABEL_PREFIX}.managed=true"})
        for key, uuids in gpus.gpus_from_containers(containers).items():
            allocator.adopt(key, uuids)
        metrics.update_gpu_gauges(allocator)
        return allocator

    def _profiles(self) -> list[Profile]:
        try:
            return load_profiles(self.profile_list)
        except ValueError as e:
            raise web.HTTPError(500, f"devdock's profile_list is misconfigured: {e}") from e

    def _groups(self) -> set[str]:
        return {g.name for g in getattr(self.user, "groups", []) or []}

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    async def _render_options_form(self, spawner=None) -> str:
        profiles = visible_profiles(self._profiles(), self._groups())
        if len(profiles) <= 1:
            return ""  # nothing to choose: the hub starts the server straight away
        allocator = await self.gpu_allocator()
        key = self.ssh_key
        chosen = self.user_options.get("profile") if isinstance(self.user_options, dict) else None
        rows = []
        for p in profiles:
            total = len(p.gpu_ids) if p.gpu_ids else allocator.total
            available, reason = True, ""
            if p.gpus:
                available = allocator.can_satisfy(p.gpus, list(p.gpu_ids) or None, key)
                if not available:
                    reason = (
                        "No GPUs on this server."
                        if allocator.total == 0
                        else f"Not enough free GPUs right now ({allocator.free(key)} free)."
                    )
            rows.append(
                {
                    "slug": p.slug,
                    "display_name": p.display_name,
                    "description": p.description,
                    "gpus": p.gpus,
                    "gpu_label": p.gpu_label,
                    "free": allocator.free(key) if not p.gpu_ids else total,
                    "total": total,
                    "available": available,
                    "reason": reason,
                    "checked": False,
                }
            )
        preferred = [r for r in rows if r["available"] and r["slug"] == chosen]
        preferred = preferred or [r for r, p in zip(rows, profiles, strict=True) if r["available"] and p.default]
        preferred = preferred or [r for r in rows if r["available"]]
        if preferred:
            preferred[0]["checked"] = True
        return (
            _templates()
            .get_template("devdock_form.html")
            .render(profiles=rows, gpu_total=allocator.total, gpu_free=allocator.free(key))
        )

    @default("options_from_form")
    def _default_options_from_form(self):
        def options_from_form(formdata):
            return {"profile": formdata.get("profile", [""])[0]}

        return options_from_form

    _configured: dict | None = None

    def _apply_profile(self, profile: Profile) -> None:
        """Start from the site's configuration, then apply the profile: nothing leaks between spawns."""
        if self._configured is None:
            self._configured = {name: copy.deepcopy(getattr(self, name)) for name in OVERRIDABLE}
        for name, value in self._configured.items():
            # The configured value was validated when it was set; restore it as it was (a trait
            # assignment would re-validate, turning mem_limit=None into 0).
            self._trait_values[name] = copy.deepcopy(value)
        for name, value in profile.overrides.items():
            if name == "environment":
                value = {**self._configured["environment"], **value}
            setattr(self, name, copy.deepcopy(value))

    async def allocate_gpus(self, profile: Profile) -> list[gpus.GPU]:
        allocator = await self.gpu_allocator()
        try:
            uuids = allocator.allocate(self.ssh_key, profile.gpus, list(profile.gpu_ids) or None)
        except gpus.NotEnoughGPUs as e:
            raise web.HTTPError(409, str(e)) from e
        finally:
            metrics.update_gpu_gauges(allocator)
        self.gpu_ids = uuids
        return [allocator.by_uuid[u] for u in uuids]

    def release_gpus(self) -> None:
        if self._gpu["allocator"] is not None:
            self._gpu["allocator"].release(self.ssh_key)
            metrics.update_gpu_gauges(self._gpu["allocator"])
        self.gpu_ids = []

    # --- naming helpers ----------------------------------------------------------------------

    @property
    def user_slug(self) -> str:
        return naming.safe_slug(self.user.name)

    @property
    def server_slug(self) -> str:
        return naming.safe_slug(self.name) if self.name else ""

    @property
    def login_name(self) -> str:
        return naming.login_name(self.user.name)

    def template_namespace(self):
        """DockerSpawner's template fields, plus devdock's safe names.

        ``{slug}``, ``{server_slug}``, ``{login}``, ``{devdock_object_name}`` and ``{home_volume}`` can
        be used in ``volumes``, ``name_template``, ``extra_create_kwargs`` and friends.
        """
        ns = super().template_namespace()
        ns.update(
            slug=self.user_slug,
            server_slug=self.server_slug,
            login=self.login_name,
            devdock_object_name=naming.object_name(self.prefix, self.user_slug, self.server_slug),
            home_volume=naming.home_volume_name(self.prefix, self.user_slug, self.server_slug),
        )
        return ns

    @default("volumes")
    def _default_volumes(self):
        """``{"{home_volume}": "/home/{login}"}``: one persistent home per user and named server."""
        return {"{home_volume}": "/home/{login}"}

    def _labels(self) -> dict:
        return naming.labels(
            username=self.user.name,
            server=self.name or "",
            login=self.login_name,
            version=__version__,
            extra=self.extra_labels,
        )

    def _container_labels(self) -> dict:
        labels = self._labels()
        if self.ssh_enabled and self.ssh_port:
            # Lets a restarted hub (and every allocation) see which server holds which port.
            labels[SSH_PORT_LABEL] = str(self.ssh_port)
        if self.gpu_ids:
            labels[gpus.GPU_LABEL] = ",".join(self.gpu_ids)
        return labels

    _allotted_gpus: list = []

    # --- environment -------------------------------------------------------------------------

    def get_env(self):
        env = super().get_env()
        env.update(
            DEVDOCK_LOGIN=self.login_name,
            DEVDOCK_UID=str(self.login_uid),
            DEVDOCK_SSH="1" if self.ssh_enabled else "0",
        )
        if self.ssh_enabled:
            env.update(
                DEVDOCK_SSH_AUTHORIZED_KEYS="\n".join(key.line() for key in self._ssh_keys),
                DEVDOCK_SSH_TCP_FORWARDING=self.ssh_tcp_forwarding,
                DEVDOCK_SSH_X11_FORWARDING="yes" if self.ssh_x11_forwarding else "no",
                DEVDOCK_SSH_AGENT_FORWARDING="yes" if self.ssh_agent_forwarding else "no",
            )
        return env

    _ssh_keys: list = []

    # --- Docker objects ----------------------------------------------------------------------

    _network_lock = asyncio.Lock()

    async def ensure_network(self):
        """Create the user network once, if it is missing and ours to create."""
        if not self.create_network or self.network_name in ("bridge", "host", "none"):
            return
        async with self._network_lock:
            try:
                await self.docker("inspect_network", self.network_name)
                return
            except APIError as e:
                if e.status_code != 404:
                    raise
            self.log.info("Creating Docker network %s (isolated: %s)", self.network_name, self.isolate_containers)
            await self.docker(
                "create_network", **network_spec(self.network_name, self.isolate_containers, self.extra_labels)
            )

    async def ensure_volumes(self):
        """Create named home volumes up front, so that they carry devdock's labels."""
        for source in self.volume_binds:
            if "/" in source:
                continue  # a host path, not a named volume
            await self.docker("create_volume", name=source, labels=self._labels())

    async def _resolve_extra(self, value):
        value = self._eval_if_callable(value)
        if inspect.isawaitable(value):
            value = await value
        return self._render_templates(value or {})

    async def container_settings(self) -> ContainerSettings:
        """The settings of this spawn's container, computed fresh from the traits each time."""
        gpu_config = gpus.device_config(
            self._allotted_gpus, self.gpu_mode, self.gpu_common_devices, self.gpu_driver_dir
        )
        environment = {**self.get_env(), **gpu_config["env"]}
        return ContainerSettings(
            image=self.image,
            name=self.object_name,
            hostname=naming.hostname(self.user_slug, self.server_slug),
            command=await self.get_command(),
            environment=environment,
            labels=self._container_labels(),
            network=self.network_name,
            port=self.port,
            binds={**self.volume_binds, **gpu_config["binds"]},
            device_requests=gpu_config["device_requests"],
            devices=gpu_config["devices"],
            mounts=[self._mount(m) for m in self.mounts],
            mem_limit=self.mem_limit or None,
            cpu_limit=self.cpu_limit or None,
            shm_size=self.shm_size or None,
            pids_limit=self.pids_limit or None,
            stop_timeout=self.stop_grace_seconds,
            published=(
                {f"{SSH_CONTAINER_PORT}/tcp": (self.ssh_bind_address, self.ssh_port)}
                if self.ssh_enabled and self.ssh_port
                else {}
            ),
            extra_create=await self._resolve_extra(self.extra_create_kwargs),
            extra_host=await self._resolve_extra(self.extra_host_config),
        )

    def _mount(self, mount: dict):
        from docker.types import Mount

        return Mount(**{k: self.format_volume_name(v, self) if isinstance(v, str) else v for k, v in mount.items()})

    async def create_object(self):
        """Create the container from :func:`devdock_spawner.container.container_spec`."""
        settings = await self.container_settings()
        try:
            create_kwargs, host_kwargs = container_spec(settings)
        except UnsafeConfiguration as e:
            self.log.error("Refusing to spawn %s: %s", self._log_name, e)
            raise web.HTTPError(500, f"The server configuration is unsafe: {e}") from e
        if not self.use_internal_ip:
            host_kwargs.setdefault("port_bindings", {})[self.port] = (self.host_ip,)
        create_kwargs["host_config"] = self.client.create_host_config(**host_kwargs)
        self.log.debug("Creating container %s with %s", self.object_name, create_kwargs)
        return await self.docker("create_container", **create_kwargs)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self):
        self._progress_events = []
        self._emit(5, f"Preparing the desktop for {self.user.name}")
        # Validate everything the user sent before creating anything.
        try:
            profile, options = validate_user_options(self.user_options, self._profiles(), self._groups())
        except InvalidOptions as e:
            raise web.HTTPError(400, str(e)) from e
        self.user_options = options
        self._apply_profile(profile)
        self._ssh_keys = self.ssh_keys_for_spawn() if self.ssh_enabled else []
        t0 = time.perf_counter()
        self._allotted_gpus = await self.allocate_gpus(profile)
        if self._allotted_gpus:
            self._emit(10, f"GPUs: {', '.join(f'{g.index} ({g.name})' for g in self._allotted_gpus)}")
        try:
            await self.check_image()
            await self.ensure_network()
            await self.ensure_volumes()
            if self.ssh_enabled:
                await self.allocate_ssh_port()
                self._emit(20, f"SSH: {self.ssh_command}")
            metrics.SPAWN_PHASE.labels("prepare").observe(time.perf_counter() - t0)
            self._emit(30, f"Starting container {self.object_name} ({profile.display_name})")
            t1 = time.perf_counter()
            ip_port = await super().start()
            metrics.SPAWN_PHASE.labels("container").observe(time.perf_counter() - t1)
            t2 = time.perf_counter()
            await self._wait_for_server(*ip_port)
            metrics.SPAWN_PHASE.labels("server").observe(time.perf_counter() - t2)
        except BaseException:
            # Nothing half-made stays behind: no container, no GPU held.
            await self._clean_up_failed_start()
            raise
        self._emit(60, "Container started, waiting for JupyterLab and the desktop to answer")
        return ip_port

    async def check_image(self):
        """The image must be there (or pullable) before anything else is created for the spawn."""
        try:
            await self.pull_image(self.image)
        except (APIError, DockerException) as e:
            detail = getattr(e, "explanation", None) or str(e)
            raise web.HTTPError(
                503,
                f"The image {self.image} is not available on this server ({detail}). "
                "An admin can build it (scripts/build-images.sh) or pull it.",
            ) from e

    async def poll(self):
        """DockerSpawner's poll, but an unreachable engine is not a dead server.

        If Docker does not answer (daemon restarting, socket gone), saying "stopped" would make the hub
        forget a server that is most likely still running; say "running" and log it loudly instead.
        The next poll after the engine is back tells the truth.
        """
        try:
            return await super().poll()
        except (RequestsConnectionError, DockerException) as e:
            if isinstance(e, APIError):
                raise
            self.log.error(
                "devdock: the Docker engine does not answer (%s); keeping %s as running until it does",
                e,
                self._log_name,
            )
            return None

    async def _wait_for_server(self, ip: str, port: int) -> None:
        """Wait until the server accepts connections, or fail at once, with its output, if it exited.

        JupyterHub would otherwise wait the whole ``http_timeout`` for a container that died at start.
        """
        deadline = time.monotonic() + self.http_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1)
                writer.close()
                return
            except (OSError, asyncio.TimeoutError):
                pass
            state = (await self.docker("inspect_container", self.container_id))["State"]
            if not state["Running"]:
                logs = await self.docker("logs", self.container_id, tail=8)
                output = logs.decode(errors="replace").strip().replace("\n", " | ")[-600:]
                raise web.HTTPError(
                    500,
                    f"The server stopped right after starting (exit code {state['ExitCode']}). "
                    f"Its last output: {output or '(none)'}",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _clean_up_failed_start(self):
        try:
            if self.object_id and not self.keep_failed_containers:
                await self.remove_object()
                self.object_id = ""
        except Exception as e:  # noqa: BLE001 - the original error matters more
            self.log.warning("Could not remove the container of a failed start of %s: %s", self._log_name, e)
        self.release_gpus()

    async def start_object(self):
        """Start the container; if Docker cannot bind the SSH port after all, move to the next one."""
        for attempt in range(3):
            try:
                return await super().start_object()
            except APIError as e:
                message = str(e.explanation or e)
                if "could not select device driver" in message or "nvidia-container-cli" in message:
                    raise web.HTTPError(
                        503,
                        "This server cannot give containers GPUs right now: Docker has no working NVIDIA "
                        "runtime (the NVIDIA container toolkit is missing or broken). Choose a profile "
                        "without GPUs, or ask an admin to install the toolkit or change gpu_mode.",
                    ) from e
                bind_error = "port is already allocated" in message or "address already in use" in message
                if not (self.ssh_enabled and self.ssh_port and bind_error) or attempt == 2:
                    raise
                self.log.warning("SSH port %s of %s is taken outside devdock: %s", self.ssh_port, self._log_name, e)
                self.port_allocator.mark_unusable(self.ssh_port)
                await self.remove_object()
                await self.allocate_ssh_port()
                obj = await self.create_object()
                self.object_id = obj[self.object_id_key]

    # --- state -------------------------------------------------------------------------------

    def load_state(self, state):
        super().load_state(state)
        # ssh_port: the port this server had, so that it keeps it (also while stopped).
        self.ssh_port = int(state.get("ssh_port") or 0)
        # gpu_ids: shown to admins; the allocator itself is rebuilt from the containers' labels.
        self.gpu_ids = [str(u) for u in state.get("gpu_ids") or []]

    def get_state(self):
        state = super().get_state()
        if self.ssh_port:
            state["ssh_port"] = self.ssh_port
        if self.gpu_ids:
            state["gpu_ids"] = list(self.gpu_ids)
        return state

    def clear_state(self):
        # Keep ssh_port: a stopped server keeps its port for the next start.
        # GPUs are freed here: JupyterHub calls clear_state after every stop, also when the container
        # died or vanished on its own (then it does not call stop()).
        port = self.ssh_port
        super().clear_state()
        self.ssh_port = port
        self.release_gpus()

    # --- progress ----------------------------------------------------------------------------

    _progress_events: list

    def _emit(self, progress: int, message: str):
        events = getattr(self, "_progress_events", None)
        if events is None:
            events = self._progress_events = []
        events.append({"progress": progress, "message": message})

    async def progress(self):
        """Events for the spawn-pending page, as they happen during ``start()``."""
        sent = 0
        while True:
            events = getattr(self, "_progress_events", [])
            while sent < len(events):
                yield events[sent]
                sent += 1
            if self._spawn_future is not None and self._spawn_future.done():
                return
            await asyncio.sleep(0.25)


_jinja = None


def _templates():
    """devdock's jinja2 templates (autoescaped), loaded on first use."""
    global _jinja
    if _jinja is None:
        import jinja2

        _jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
            autoescape=True,
        )
    return _jinja

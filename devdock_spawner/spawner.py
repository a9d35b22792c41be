"""DevDockSpawner: one GUI dev container per user (and per named server) on a Docker engine."""

from __future__ import annotations

import asyncio
import inspect

from docker.errors import APIError
from dockerspawner import DockerSpawner
from tornado import web
from traitlets import Bool, Dict, Int, Unicode, default

from . import naming
from ._version import __version__
from .container import ContainerSettings, UnsafeConfiguration, container_spec


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

    stop_grace_seconds = Int(
        5,
        config=True,
        help="""
        Seconds between SIGTERM and SIGKILL when a server stops. JupyterLab and the desktop exit
        in well under a second; the default 5 keeps stops fast. Docker's own default is 10.
        """,
    )

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

    # --- environment -------------------------------------------------------------------------

    def get_env(self):
        env = super().get_env()
        env.update(
            DEVDOCK_LOGIN=self.login_name,
            DEVDOCK_UID=str(self.login_uid),
        )
        return env

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
            self.log.info("Creating Docker network %s", self.network_name)
            await self.docker(
                "create_network",
                self.network_name,
                driver="bridge",
                check_duplicate=True,
                labels={f"{naming.LABEL_PREFIX}.managed": "true", **self.extra_labels},
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
        return ContainerSettings(
            image=self.image,
            name=self.object_name,
            hostname=naming.hostname(self.user_slug, self.server_slug),
            command=await self.get_command(),
            environment=self.get_env(),
            labels=self._labels(),
            network=self.network_name,
            port=self.port,
            binds=self.volume_binds,
            mounts=[self._mount(m) for m in self.mounts],
            mem_limit=self.mem_limit,
            cpu_limit=self.cpu_limit,
            shm_size=self.shm_size or None,
            pids_limit=self.pids_limit or None,
            stop_timeout=self.stop_grace_seconds,
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
        self._emit(10, f"Preparing the desktop for {self.user.name}")
        await self.ensure_network()
        await self.ensure_volumes()
        self._emit(30, f"Starting container {self.object_name}")
        ip_port = await super().start()
        self._emit(60, "Container started, waiting for JupyterLab and the desktop to answer")
        return ip_port

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

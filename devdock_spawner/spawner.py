"""DevDockSpawner: one GUI dev container per user (and per named server) on a Docker engine."""

from __future__ import annotations

import asyncio
import inspect
import time
from datetime import UTC, datetime

from docker.errors import APIError, DockerException
from docker.types import Mount
from dockerspawner import DockerSpawner
from jupyterhub import orm
from requests.exceptions import ConnectionError as RequestsConnectionError
from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, Int, List, TraitError, Unicode, default, validate

from . import cloud_metadata, metrics, naming, reconcile
from . import gpu as gpus
from ._version import __version__
from .container import ContainerSettings, UnsafeConfiguration, container_spec, last_lines, network_spec
from .guarantees import log_text, missing_guarantees
from .hubstate import hub_state
from .images import missing_image_message
from .ports import port_taken
from .profiles import InvalidOptions, validate_user_options
from .spawner_culling import CullingMixin
from .spawner_desktop import DesktopMixin
from .spawner_gpu import GPUMixin
from .spawner_homes import HomesMixin
from .spawner_profiles import ProfilesMixin
from .spawner_resources import ResourcesMixin
from .spawner_ssh import SSH_CONTAINER_PORT, SSHMixin


class DevDockSpawner(
    SSHMixin, ProfilesMixin, GPUMixin, HomesMixin, CullingMixin, ResourcesMixin, DesktopMixin, DockerSpawner
):
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

    hub_id = Unicode(
        "devdock",
        config=True,
        help="""
        Name of this hub, written on its containers and volumes (label ``io.devdock.hub``). A hub only
        reconciles containers with its own name, so that hubs sharing one Docker engine leave each
        other alone. Default: ``devdock``.
        """,
    )

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
        docker-compose.yml keeps it on too: its hub and proxy use the host's network. Set False only
        when the hub runs in a container attached to this network. Default: True.
        """,
    )

    allow_single_origin = Bool(
        False,
        config=True,
        help="""
        Serve users' servers on the hub's own origin (``JupyterHub.subdomain_host`` unset). **Unsafe on a hub
        with more than one user**: a user controls their own server completely, so a page it serves runs on
        the hub's origin, and whoever opens it (another user, an admin) lets it act for them: change their SSH
        keys on ``/hub/ssh``, read their pages. devdock refuses to start servers on such a hub unless this is
        True; the admin page then says so in red. ``jupyterhub_config.py`` sets it from ``DEVDOCK_SINGLE_ORIGIN``.
        Default: False (set ``c.JupyterHub.subdomain_host``: every server on its own origin).
        """,
    )

    @property
    def single_origin_problem(self) -> str:
        """Why this hub must not start servers ("" when every user's server has its own origin)."""
        settings = getattr(self.user, "settings", None) or {}
        if settings.get("subdomain_host") or self.allow_single_origin:
            return ""
        return (
            "devdock gives every user's server an origin of its own, and this hub's JupyterHub.subdomain_host is "
            "not set: a page served by one user's server could act for whoever opens it. Set "
            "c.JupyterHub.subdomain_host (DEVDOCK_SUBDOMAIN_HOST; local use: http://localhost:8000), or accept the "
            "risk with c.DevDockSpawner.allow_single_origin = True (DEVDOCK_SINGLE_ORIGIN=1); docs/security.md"
        )

    block_cloud_metadata = Bool(
        True,
        config=True,
        help="""
        Keep users' containers from the cloud's metadata service (``cloud_metadata_addresses``), which answers
        anyone on a cloud VM with the VM's identity and its role's credentials: at the hub's first spawn, devdock
        adds a rule per subnet of ``network_name`` to Docker's ``DOCKER-USER`` iptables chain (a one-shot helper
        container of ``firewall_helper_image`` on the host's network with ``NET_ADMIN``); the host itself is not
        affected. A start is refused with a sentence when the rule cannot be added. Single engine only (on a
        Swarm, add the rule on each node: docs/security.md). False: no rule (and none removed). Default: True.
        """,
    )

    cloud_metadata_addresses = List(
        Unicode(),
        list(cloud_metadata.DEFAULT_ADDRESSES),
        config=True,
        help="""
        IPv4 addresses or networks users' containers must not reach (``block_cloud_metadata``). Default:
        ``["169.254.169.254"]`` (AWS, Azure, GCP, OpenStack, Oracle and others); add e.g. ``"169.254.170.2"``
        (Amazon ECS task metadata) or ``"100.100.100.200"`` (Alibaba Cloud).
        """,
    )

    @validate("cloud_metadata_addresses")
    def _valid_metadata_addresses(self, proposal):
        try:
            cloud_metadata.ipv4_networks(proposal.value)
        except ValueError as e:
            raise TraitError(f"cloud_metadata_addresses: {e}") from e
        return proposal.value

    firewall_helper_image = Unicode(
        "devdock/hub:latest",
        config=True,
        help="""
        Image of the one-shot helper that adds the ``block_cloud_metadata`` rule: it runs ``sh`` and
        ``iptables-nft`` / ``iptables-legacy`` (devdock's hub image has them) on the host's network, with no
        capability but ``NET_ADMIN`` and ``NET_RAW``, a read-only root and no new privileges.
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

    docker_workers = Int(
        8,
        config=True,
        help="""
        Threads for Docker API calls, shared by all servers. DockerSpawner uses one, so twenty users
        logging in at once wait for each other's every Docker call; devdock defaults to 8. Example: 16
        on a large host. Minimum 1.
        """,
    )

    @property
    def executor(self):
        """One thread pool of ``docker_workers`` threads for the whole hub (DockerSpawner has one thread)."""
        return hub_state().executor(max(1, self.docker_workers))

    desktop_prestart = Bool(
        True,
        config=True,
        help="""
        Start the desktop (TigerVNC and the XFCE session) when the server starts, at a lower CPU priority,
        instead of when the user first opens it: the desktop is there at the first click. Costs the
        desktop's memory (about 140 MiB) for users who never open it; set False on hosts short of memory.
        Skipped while the hub is busy starting many servers (see ``desktop_prestart_max_spawns``).
        Default: True.
        """,
    )

    desktop_prestart_max_spawns = Int(
        2,
        config=True,
        help="""
        Start the desktop early (``desktop_prestart``) only while at most this many servers are starting at
        once, this one included. When a class logs in together, every early desktop would take CPU from the
        other servers' starts; their desktops then start when first opened, as without prestart.
        Default: 2.
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

    # --- naming helpers ----------------------------------------------------------------------

    @property
    def user_slug(self) -> str:
        return naming.safe_slug(self.user.name)

    @property
    def server_slug(self) -> str:
        return naming.safe_slug(self.name) if self.name else ""

    @property
    def login_name(self) -> str:
        return self._legacy_login or naming.login_name(self.user.name)

    #: The login name of a home made before devdock 0.2 (its ``io.devdock.login`` label), kept so that paths
    #: inside it (virtualenvs, scripts) stay valid; empty for everyone else.
    _legacy_login = ""

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
            home_volume=self.home_volume,
        )
        return ns

    def _labels(self) -> dict:
        return naming.labels(
            username=self.user.name,
            server=self.name or "",
            login=self.login_name,
            version=__version__,
            hub=self.hub_id,
            extra=self.extra_labels,
        )

    def _container_labels(self) -> dict:
        labels = self._labels()
        if self.ssh_via_port and self.ssh_port:
            # Lets a restarted hub (and every allocation) see which server holds which port.
            labels[naming.SSH_PORT_LABEL] = str(self.ssh_port)
        if self.gpu_ids:
            labels[naming.GPU_LABEL] = ",".join(self.gpu_ids)
        return labels

    #: The GPUs of this spawn (per server; computed fresh by every start).
    _allotted_gpus: tuple = ()

    # --- environment -------------------------------------------------------------------------

    def get_env(self):
        env = super().get_env()
        env.update(
            DEVDOCK_LOGIN=self.login_name,
            DEVDOCK_UID=str(self.login_uid),
            DEVDOCK_DESKTOP_PRESTART="1" if self._prestart_desktop() else "0",
            **self.ssh_environment(),
            **self.cull_environment(),
            **self.desktop_environment(),
        )
        if self._home_limit:
            env["DEVDOCK_HOME_SIZE"] = str(self._home_limit)
        return env

    def _ssh_progress_message(self) -> str:
        if not self.ssh_via_port:
            return f"SSH: ssh {self.ssh_gateway_alias} (through the gateway; your ~/.ssh/config block is on /hub/ssh)"
        return f"SSH: {self.ssh_command}"

    def _prestart_desktop(self) -> bool:
        return self.desktop_prestart and hub_state().starting <= self.desktop_prestart_max_spawns

    # --- Docker objects ----------------------------------------------------------------------

    async def ensure_network(self):
        """Create the user network once, if it is missing and ours to create; keep cloud metadata off it."""
        if self.network_name in ("host", "none"):
            return
        if self.create_network and self.network_name != "bridge":
            await self._create_network()
        await self.ensure_cloud_metadata_blocked()

    async def ensure_cloud_metadata_blocked(self):
        """Once per hub and network: the ``DOCKER-USER`` rules of :mod:`devdock_spawner.cloud_metadata`."""
        if not self.block_cloud_metadata or not self.cloud_metadata_addresses:
            return
        done = f"cloud-metadata:{self.network_name}"
        async with hub_state().lock("network"):
            if done in hub_state().done:
                return
            info = await self.docker("inspect_network", self.network_name)
            subnets = [c["Subnet"] for c in (info.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
            try:
                script = cloud_metadata.block_script(self.network_name, subnets, self.cloud_metadata_addresses)
            except ValueError as e:
                raise web.HTTPError(500, f"devdock cannot block cloud metadata on {self.network_name}: {e}") from e
            host = self.client.create_host_config(
                network_mode="host",
                cap_drop=["ALL"],
                cap_add=["NET_ADMIN", "NET_RAW"],
                security_opt=["no-new-privileges:true"],
                read_only=True,
                tmpfs={"/run": "size=1m", "/tmp": "size=1m"},  # iptables-legacy's lock file
            )
            failure = (
                f"devdock could not keep users' containers on {self.network_name} from the cloud's metadata service "
                "(c.DevDockSpawner.block_cloud_metadata = False starts servers without that rule)"
            )
            used = await self._one_shot(
                self.firewall_helper_image, ["sh", "-c", script], host, "cloud-metadata-block", failure
            )
            self.log.info("devdock: users' containers on %s (%s) cannot reach %s (DOCKER-USER in %s)",
                          self.network_name, ", ".join(subnets), ", ".join(self.cloud_metadata_addresses),
                          used.strip())  # fmt: skip
            hub_state().done.add(done)

    async def _create_network(self):
        async with hub_state().lock("network"):
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
            tmp_size=self.tmp_size or None,
            log_max_size=self.log_max_size or None,
            log_max_files=self.log_max_files,
            oom_score_adj=self.oom_score_adj,
            pids_limit=self.pids_limit or None,
            stop_timeout=self.stop_grace_seconds,
            published=(
                {f"{SSH_CONTAINER_PORT}/tcp": (self.ssh_bind_address, self.ssh_port)}
                if self.ssh_via_port and self.ssh_port
                else {}
            ),
            server_host_ip=None if self.use_internal_ip else self.host_ip,
            loader_environment={k: v for k, v in gpu_config["env"].items() if k.startswith("LD_")},
            extra_create=await self._resolve_extra(self.extra_create_kwargs),
            extra_host=await self._resolve_extra(self.extra_host_config),
        )

    def _mount(self, mount: dict):

        return Mount(**{k: self.format_volume_name(v, self) if isinstance(v, str) else v for k, v in mount.items()})

    async def create_object(self):
        """Create the container from :func:`devdock_spawner.container.container_spec`."""
        settings = await self.container_settings()
        try:
            create_kwargs, host_kwargs = container_spec(settings)
        except UnsafeConfiguration as e:
            self.log.error("Refusing to spawn %s: %s", self._log_name, e)
            raise web.HTTPError(500, f"The server configuration is unsafe: {e}") from e
        create_kwargs["host_config"] = self.client.create_host_config(**host_kwargs)
        self.log.debug("Creating container %s with %s", self.object_name, create_kwargs)
        return await self.docker("create_container", **create_kwargs)

    async def remove_object(self):
        """Remove this server's container, stopping it first if it still runs.

        DockerSpawner removes without ``force``, which Docker refuses for a running container (a 409 that
        DockerSpawner takes for "already being removed"); a start that replaces a server the database did not
        know would then fail on the name. The user's own start replaces their own server: stop it gracefully.
        """
        try:
            await self.docker("stop", self.object_id, timeout=self.stop_grace_seconds)
        except APIError as e:
            if e.status_code not in (304, 404, 409):
                raise
        return await super().remove_object()

    # --- reconciliation ----------------------------------------------------------------------

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

    async def reconcile(self) -> None:
        """Once per hub, before the first allocation: compare this hub's Docker objects with its database.

        The decision is :func:`devdock_spawner.reconcile.plan`'s; this step gathers the facts and carries it out.
        """
        state = hub_state()
        async with state.lock("reconcile"):
            if f"reconciled:{self.hub_id}" in state.done:
                return
            running = self._running_server_keys()
            decided = reconcile.plan(await self._find_own_objects(), running, self.unknown_servers)
            for found in decided.remove:
                self.log.warning(
                    "devdock: removing orphaned %s %s: no running server of this hub's database is %s",
                    self.object_type, found.name, found.key,
                )  # fmt: skip
                await self._remove_found(found)
            for found in decided.keep_unknown:
                self.log.warning(
                    "devdock: %s %s of %s runs but this hub's database does not know it (a new or restored "
                    "database?): left running, its GPUs %s and SSH port %s held; the user's next start replaces "
                    "it, or an admin removes it",
                    self.object_type, found.name, found.key, list(found.gpus) or "none", found.ssh_port or "none",
                )  # fmt: skip
            state.unknown_containers = list(decided.keep_unknown)
            state.done.add(f"reconciled:{self.hub_id}")
        self.start_watching()

    def _running_server_keys(self) -> set[str] | None:
        """``user/server`` of every server the hub database says is running (None: no database here)."""
        db = getattr(self.user, "db", None)
        if db is None:
            return None

        return {
            naming.server_key(s.user.name, s.name or "")
            for s in db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None))
            if s.user is not None
        }

    async def _find_own_objects(self) -> list[reconcile.Found]:
        """This hub's containers (users' servers only), running or not."""
        containers = await self.docker("containers", all=True, filters={"label": f"{naming.HUB_LABEL}={self.hub_id}"})
        found = []
        for c in containers:
            key = naming.server_key_from_labels(c.get("Labels"))
            if key is not None:
                found.append(reconcile.container_found(c, key, naming.GPU_LABEL, naming.SSH_PORT_LABEL))
        return found

    async def _remove_found(self, found: reconcile.Found) -> None:
        try:
            await self.docker("remove_container", found.id, force=True)
        except APIError as e:
            if e.status_code != 404:
                raise

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self):
        hub_state().starting += 1
        self._progress_events = []
        self._start_finished = False
        try:
            return await self._start()
        except web.HTTPError as e:
            # devdock's refusals are sentences for the user (a missing image, a full disk, an unsafe setting), but
            # JupyterHub's error and spawn-pending pages show a failed start's own words only from
            # ``jupyterhub_message``: without it the user reads "Failed to start your server on the last attempt".
            if e.log_message and not getattr(e, "jupyterhub_message", None):
                e.jupyterhub_message = e.log_message
            raise
        finally:
            self._start_finished = True
            hub_state().starting -= 1

    async def _start(self):
        self._start_began = time.monotonic()
        self._emit(5, f"Preparing the desktop for {self.user.name}")
        problem = self.single_origin_problem or self.hub_disk_problem()
        if problem:
            self.log.error("devdock: not starting %s: %s", self._log_name, problem)
            raise web.HTTPError(503, problem)
        # Validate everything the user sent before creating anything.
        try:
            profile, options = validate_user_options(self.user_options, self._profiles(), self._groups())
        except InvalidOptions as e:
            raise web.HTTPError(400, str(e)) from e
        self.user_options = options
        self._apply_profile(profile)
        self._profile_slug = profile.slug
        try:
            self.desktop_views = self.desktop_views_for_spawn()
        except ValueError as e:
            self.log.error("devdock: not starting %s: %s", self._log_name, e)
            raise web.HTTPError(500, f"devdock is misconfigured: {e}") from e
        self.stop_reason = {}
        if self.last_oom:
            self._emit(
                6,
                f"Last time this server ran out of memory ({self.last_oom:%H:%M} UTC, limit {self.memory_limit_text})",
            )
        self._ssh_keys = self.ssh_keys_for_spawn() if self.ssh_enabled else []
        t0 = time.perf_counter()
        await self.reconcile()
        self._allotted_gpus = await self.allocate_gpus(profile)
        if self._allotted_gpus:
            self._emit(10, f"GPUs: {', '.join(f'{g.index} ({g.name})' for g in self._allotted_gpus)}")
        try:
            await self.check_image()
            await self.ensure_network()
            await self.resolve_home_volume()
            await self.ensure_volumes()
            if self.ssh_via_port:
                await self.allocate_ssh_port()
            if self.ssh_enabled:
                self._emit(20, self._ssh_progress_message())
            metrics.SPAWN_PHASE.labels("prepare").observe(time.perf_counter() - t0)
            self._emit(30, f"Starting container {self.object_name} ({profile.display_name})")
            t1 = time.perf_counter()
            ip_port = await super().start()
            await self.release_home_image()
            metrics.SPAWN_PHASE.labels("container").observe(time.perf_counter() - t1)
            t2 = time.perf_counter()
            await self._wait_for_server(*ip_port)
            metrics.SPAWN_PHASE.labels("server").observe(time.perf_counter() - t2)
            if self.ssh_enabled:
                self.ssh_host_key = await self.read_ssh_host_key() or self.ssh_host_key
        except BaseException:
            # Nothing half-made stays behind: no container, no GPU held.
            await self._clean_up_failed_start()
            raise
        self._emit(60, "Container started, waiting for JupyterLab and the desktop to answer")
        return ip_port

    async def get_command(self):
        """DockerSpawner's command (``cmd``, else the image's CMD), with a sentence for an image without CMD."""
        try:
            return await super().get_command()
        except TypeError as e:  # DockerSpawner adds None (no CMD) to the arguments
            raise web.HTTPError(
                500,
                f"The image {self.image} has no CMD, so devdock does not know what to start. An admin should set "
                "c.DockerSpawner.cmd (e.g. ['jupyterhub-singleuser']) or use a devdock image.",
            ) from e

    async def check_image(self):
        """The image must be there (or pullable) before anything else is created for the spawn."""
        try:
            await self.pull_image(self.image)
        except (APIError, DockerException) as e:
            detail = getattr(e, "explanation", None) or str(e)
            message = missing_image_message(self.image, "users' servers run it", detail)
            self.log.error("devdock: not starting %s: %s", self._log_name, message)
            raise web.HTTPError(503, message) from e

    async def poll(self):
        """DockerSpawner's poll, but an unreachable engine is not a dead server.

        If Docker does not answer (daemon restarting, socket gone), saying "stopped" would make the hub
        forget a server that is most likely still running; say "running" and log it loudly instead.
        The next poll after the engine is back tells the truth.
        """
        try:
            return await self._poll_object()
        except (RequestsConnectionError, DockerException) as e:
            if isinstance(e, APIError):
                raise
            self.log.error(
                "devdock: the Docker engine does not answer (%s); keeping %s as running until it does",
                e,
                self._log_name,
            )
            return None

    async def _poll_object(self):
        """None while the Docker object runs, else its exit status (DockerSpawner's container poll).

        A server whose main process the kernel killed for memory says so on its user's home page.
        """
        status = await super().poll()
        if status is not None and self.container_id:
            try:
                state = (await self.docker("inspect_container", self.container_id))["State"]
            except APIError:
                return status
            if state.get("OOMKilled"):
                hub_state().oom[self.server_key] = datetime.now(UTC)
                self.stop_reason = {
                    "reason": f"it ran out of memory (its limit is {self.memory_limit_text})",
                    "at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                    "by": "the kernel",
                }
        return status

    async def _wait_for_server(self, ip: str, port: int) -> None:
        """Wait until the server accepts connections, or fail at once, with its output, if it exited.

        JupyterHub would otherwise wait the whole ``http_timeout`` for a container that died at start.
        """
        deadline = time.monotonic() + self.http_timeout
        checked = time.monotonic()
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1)
                writer.close()
                return
            except (TimeoutError, OSError):
                pass
            # Knock every 50 ms when this server starts alone, so the hub hears of it at once; when a class
            # logs in together, knock less often (50 ms per server starting, at most 0.5 s): the knocking
            # costs the hub CPU that the starting servers need. Ask Docker whether it died twice a second.
            if time.monotonic() - checked >= 0.5:
                checked = time.monotonic()
                problem = await self._exit_report()
                if problem:
                    raise web.HTTPError(500, problem)
            await asyncio.sleep(min(0.5, 0.05 * max(1, hub_state().starting)))

    async def _exit_report(self) -> str:
        """Empty while the server's container runs; else what the user should read: exit code and output."""
        state = (await self.docker("inspect_container", self.container_id))["State"]
        if state["Running"]:
            return ""
        logs = await self.docker("logs", self.container_id, tail=8)
        return (
            f"The server stopped right after starting (exit code {state['ExitCode']}). "
            f"Its last output: {last_lines(logs)}"
        )

    def _keep_failed_object(self) -> bool:
        """Whether a failed start leaves its Docker object for an admin to inspect."""
        return self.keep_failed_containers

    async def _clean_up_failed_start(self):
        try:
            if self.object_id and not self._keep_failed_object():
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
                if not (self.ssh_via_port and self.ssh_port and port_taken(message)) or attempt == 2:
                    raise
                await self.recreate_with_new_ssh_port(message)

    async def recreate_object(self) -> None:
        """Remove this server's Docker object and create it again from fresh settings (not started)."""
        await self.remove_object()
        obj = await self.create_object()
        self.object_id = obj[self.object_id_key]

    async def recreate_with_new_ssh_port(self, problem: str) -> None:
        """The engine could not bind the SSH port after all (something outside devdock holds it): never try
        that port again, take the next one, and make the object again."""
        self.log.warning("SSH port %s of %s is taken outside devdock: %s", self.ssh_port, self._log_name, problem)
        self.port_allocator.mark_unusable(self.ssh_port)
        await self.allocate_ssh_port()
        await self.recreate_object()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._say_missing_guarantees()

    def _say_missing_guarantees(self) -> None:
        """Once per hub, in its log: which of devdock's guarantees its configuration lacks, with the line that adds
        each (devdock_spawner.guarantees). JupyterHub gives a spawner no hook at its own start: the first devdock
        server object is the earliest moment (at start when servers run, else at the first sign-in)."""
        state = hub_state()
        if "guarantees" in state.done:
            return
        state.done.add("guarantees")
        gaps = missing_guarantees(self.config)
        if gaps:
            self.log.warning("%s", log_text(gaps))

    # --- state -------------------------------------------------------------------------------

    def load_state(self, state):
        super().load_state(state)
        self._forget_stored_ssh_keys()
        # ssh_port: the port this server had, so that it keeps it (also while stopped).
        self.ssh_port = int(state.get("ssh_port") or 0)
        # gpu_ids: shown to admins; the allocator itself is rebuilt from the containers' labels.
        self.gpu_ids = [str(u) for u in state.get("gpu_ids") or []]
        # ssh_host_key: shown on /hub/ssh (fingerprint, known_hosts line), also while the server is stopped.
        self.ssh_host_key = str(state.get("ssh_host_key") or "")
        # stop_reason: why the culler stopped it, for the home page, until the next start.
        self.stop_reason = dict(state.get("stop_reason") or {})
        # desktop_views: the ways into the running server's desktop, the default first (the home page's links).
        self.desktop_views = [str(v) for v in state.get("desktop_views") or []]

    def _forget_stored_ssh_keys(self) -> None:
        """Drop ``ssh_keys`` from the options JupyterHub stored for this server (devdock before 0.2 took keys there).

        JupyterHub re-uses the stored options when a start sends none; keys now come only from ``/hub/ssh``,
        and a start that sends keys is refused, so stored ones must not make every later start fail.
        """
        stored = getattr(self.orm_spawner, "user_options", None)
        if isinstance(stored, dict) and "ssh_keys" in stored:
            self.log.info(
                "Removing ssh_keys from the stored spawn options of %s (keys live on /hub/ssh)", self._log_name
            )
            self.orm_spawner.user_options = {k: v for k, v in stored.items() if k != "ssh_keys"}
            db = getattr(self.user, "db", None)
            if db is not None:
                db.commit()

    def get_state(self):
        state = super().get_state()
        if self.ssh_port:
            state["ssh_port"] = self.ssh_port
        if self.gpu_ids:
            state["gpu_ids"] = list(self.gpu_ids)
        if self.ssh_host_key:
            state["ssh_host_key"] = self.ssh_host_key
        if self.stop_reason:
            state["stop_reason"] = dict(self.stop_reason)
        if self.desktop_views:
            state["desktop_views"] = list(self.desktop_views)
        return state

    def clear_state(self):
        # Keep ssh_port and the host key: a stopped server keeps its port (and its home, the key) for the next start.
        # GPUs are freed here: JupyterHub calls clear_state after every stop, also when the container
        # died or vanished on its own (then it does not call stop()).
        port, host_key, reason = self.ssh_port, self.ssh_host_key, self.stop_reason
        super().clear_state()
        self.ssh_port, self.ssh_host_key, self.stop_reason = port, host_key, reason
        self.desktop_views = []
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
            if getattr(self, "_start_finished", True):  # JupyterHub stops asking at the same moment
                return
            await asyncio.sleep(0.25)

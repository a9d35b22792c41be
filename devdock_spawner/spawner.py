"""DevDockSpawner: one GUI dev container per user (and per named server) on a Docker engine."""

from __future__ import annotations

import inspect
import time
from datetime import UTC, datetime

from docker.errors import APIError, DockerException
from docker.types import Mount
from dockerspawner import DockerSpawner
from requests.exceptions import ConnectionError as RequestsConnectionError
from tornado import web
from traitlets import Bool, Dict, Int, TraitError, default, validate

from . import gpu as gpus
from . import metrics, naming
from ._version import __version__
from .container import ContainerSettings, UnsafeConfiguration, container_spec
from .contract import MIN_UID
from .hubwide import HubSettingsMixin
from .images import missing_image_message
from .profiles import InvalidOptions, validate_user_options
from .spawner_accounting import AccountingMixin
from .spawner_culling import CullingMixin
from .spawner_desktop import DesktopMixin
from .spawner_gpu import GPUMixin
from .spawner_homes import HomesMixin
from .spawner_network import NetworkMixin
from .spawner_profiles import ProfilesMixin
from .spawner_progress import ProgressMixin
from .spawner_resources import ResourcesMixin
from .spawner_ssh import SSH_CONTAINER_PORT, SSHMixin


class DevDockSpawner(
    AccountingMixin,
    SSHMixin,
    ProfilesMixin,
    GPUMixin,
    HomesMixin,
    CullingMixin,
    ResourcesMixin,
    DesktopMixin,
    NetworkMixin,
    ProgressMixin,
    HubSettingsMixin,
    DockerSpawner,
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

    @validate("login_uid")
    def _valid_login_uid(self, proposal):
        if proposal.value < MIN_UID:
            raise TraitError(f"login_uid must be at least {MIN_UID} (lower uids are the system's): {proposal.value}")
        return proposal.value

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
    def server_key(self) -> str:
        """This server's identity in everything hub-wide (GPUs, SSH ports, usage): ``user/server``."""
        return naming.server_key(self.user.name, self.name or "")

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
        """devdock's labels, and what a restarted hub reads back from them: who holds which SSH port and GPUs."""
        return {**self._labels(), **self.ssh_labels(), **self.gpu_labels()}

    #: The GPUs of this spawn (per server; computed fresh by every start).
    _allotted_gpus: tuple = ()

    # --- environment -------------------------------------------------------------------------

    def get_env(self):
        """DockerSpawner's environment, each part's (SSH, culling, desktop, home: through ``super()``), the account."""
        env = super().get_env()
        env.update(DEVDOCK_LOGIN=self.login_name, DEVDOCK_UID=str(self.login_uid))
        return env

    # --- Docker objects ----------------------------------------------------------------------

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

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self):
        self.devdock_hub.starting += 1
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
            self.devdock_hub.starting -= 1

    async def _start(self):
        self._start_began = time.monotonic()
        self._emit(5, f"Preparing the desktop for {self.user.name}")
        self.devdock_hub.refuse_unsupported(self)
        problem = self.single_origin_problem or self.devdock_hub.disk_problem()
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
        await self.devdock_hub.start()
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
            self.account_start(profile.slug)
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
                self.devdock_hub.oom[self.server_key] = datetime.now(UTC)
                self.stop_reason = {
                    "reason": f"it ran out of memory (its limit is {self.memory_limit_text})",
                    "at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                    "by": "the kernel",
                }
        return status

    def _keep_failed_object(self) -> bool:
        """Whether a failed start leaves its container for an admin to inspect (never a service: a kept service could
        still start later and hold GPUs)."""
        if self.object_type != "container" and self.keep_failed_containers:
            self.log.warning("The %s of a failed start is removed (keep_failed_containers is for containers)",
                             self.object_type)  # fmt: skip
        return self.keep_failed_containers and self.object_type == "container"

    async def stop_object(self):
        """Stop the container (a service stops when it is removed: ``remove_object``)."""
        if self.object_type == "container":
            await super().stop_object()

    async def _clean_up_failed_start(self):
        try:
            if self.object_id and not self._keep_failed_object():
                await self.remove_object()
                self.object_id = ""
        except Exception as e:  # noqa: BLE001 - the original error matters more
            self.log.warning("Could not remove the container of a failed start of %s: %s", self._log_name, e)
        self.release_gpus()

    async def recreate_object(self) -> None:
        """Remove this server's Docker object and create it again from fresh settings (not started)."""
        await self.remove_object()
        obj = await self.create_object()
        self.object_id = obj[self.object_id_key]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The hub-wide object is made with the hub's first devdock spawner, before any profile applies (its log
        # says which of devdock's guarantees the configuration lacks).
        self.hub_class.of(self)

    # --- state ---------------------------------------------------------------------------------
    # Each part declares the fields it keeps in the hub's database on the trait itself: ``.tag(state="server")``
    # for what a stopped server keeps (its SSH port, host key, why it stopped), ``.tag(state="run")`` for what is
    # true only while it runs (its GPUs, the ways into its desktop).

    def _state_traits(self, *kinds: str) -> dict:
        kinds = kinds or ("server", "run")
        return self.traits(state=lambda kind: kind in kinds)

    def load_state(self, state):
        super().load_state(state)
        for name, trait in self._state_traits().items():
            value = state.get(name)
            try:
                setattr(self, name, trait.default() if value in (None, "") else value)
            except TraitError as e:
                self.log.warning("devdock: ignoring the stored %s of %s: %s", name, self._log_name, e)
                setattr(self, name, trait.default())

    def get_state(self):
        state = super().get_state()
        for name in self._state_traits():
            value = getattr(self, name)
            if value:
                state[name] = type(value)(value) if isinstance(value, list | dict) else value
        return state

    def clear_state(self):
        # JupyterHub calls clear_state after every stop, also when the container died or vanished on its own (then
        # it does not call stop()): what is true only while running goes; the GPUs are given back.
        self.account_end()
        super().clear_state()
        for name, trait in self._state_traits("run").items():
            setattr(self, name, trait.default())
        self.release_gpus()
        self.forget_place_in_line()

"""DevDockSwarmSpawner: the same devdock on Docker Swarm, one service (one task) per server.

A small subclass: like DockerSpawner's own SwarmSpawner it changes how the Docker object is created,
started, watched and removed; profiles, user_options validation, SSH keys and ports, progress events,
labels and hardening are DevDockSpawner's. What Swarm changes:

- GPUs are generic resources that nodes advertise (``node-generic-resources`` in their daemon.json); a
  profile's GPU count becomes a reservation, the scheduler picks the devices, and devdock reads back which.
- Homes live on the node that runs the server unless a volume driver makes them shared: with the
  default ``swarm_home = "pin"`` a server returns to the node its home was created on.
- The SSH port is published on the task's node (``host``) or on every node (``ingress``).
- The hub and the proxy must be attached to the users' overlay network (it is created attachable) to
  reach the servers; docs/scale-out.md shows the layout.
"""

from __future__ import annotations

import asyncio
import time

from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, List, Unicode, default, validate

from . import gpu as gpus
from . import metrics, naming, reconcile, swarm
from .container import UnsafeConfiguration, last_lines
from .hubstate import hub_state
from .naming import HUB_LABEL, MANAGED_LABEL, OWNER_LABEL
from .spawner import DevDockSpawner


class DevDockSwarmSpawner(DevDockSpawner):
    """DevDockSpawner for Docker Swarm: each server is a one-task service, placed by the Swarm scheduler."""

    object_type = "service"
    object_id_key = "ID"

    @default("pull_policy")
    def _default_pull_policy(self):
        """``skip``: every node finds (or pulls) the image itself when it runs the task."""
        return "skip"

    @default("ssh_probe_host_ports")
    def _default_ssh_probe_host_ports(self):
        """False: SSH ports are published on the cluster's nodes, not necessarily where the hub runs."""
        return False

    # --- settings ----------------------------------------------------------------------------

    placement_constraints = List(
        Unicode(),
        config=True,
        help="""
        Swarm placement constraints for every server, e.g. ``["node.labels.devdock == true"]`` to keep
        users' servers off the managers. Profiles add their own (``placement`` in ``profile_list``).
        Default: none.
        """,
    )

    @validate("placement_constraints")
    def _validate_constraints(self, proposal):
        return [swarm.check_constraint(c) for c in proposal.value]

    swarm_home = CaselessStrEnum(
        ["pin", "shared"],
        config=True,
        help="""
        What a persistent home means across nodes. ``pin``: the home is a volume on the node that first
        ran the server, and the server always returns to that node (a placement constraint on its node
        id). ``shared``: the home volume comes from ``volume_driver`` (NFS through the ``local`` driver, or
        a plugin) and is the same on every node, so servers go wherever the scheduler likes.
        Default: ``shared`` when ``volume_driver`` is set, else ``pin``.
        """,
    )

    @default("swarm_home")
    def _default_swarm_home(self):
        return "shared" if self.volume_driver else "pin"

    volume_driver = Unicode(
        "",
        config=True,
        help="""
        Volume driver of the home volumes, e.g. ``local`` with NFS options in ``volume_driver_options``.
        Every node creates the volume from the same options, so all see the same files. Default: empty
        (each node's own local volumes: use ``swarm_home = "pin"``).
        """,
    )

    volume_driver_options = Dict(
        config=True,
        help="""
        Options of ``volume_driver``; ``{username}``, ``{slug}``, ``{home_volume}`` and the other
        template fields are filled in. Example (one NFS export per user)::

            {"type": "nfs", "o": "addr=nfs.example.org,rw,nfsvers=4", "device": ":/export/homes/{slug}"}
        """,
    )

    gpu_resource_kind = Unicode(
        "NVIDIA-GPU",
        config=True,
        help="""
        Generic resource kind the nodes advertise their GPUs as (``node-generic-resources`` in
        daemon.json, e.g. ``["NVIDIA-GPU=GPU-8f3c..."]``). A profile's ``gpus: N`` reserves N of them.
        Default: ``NVIDIA-GPU``.
        """,
    )

    ssh_publish_mode = CaselessStrEnum(
        list(swarm.PUBLISH_MODES),
        "host",
        config=True,
        help="""
        ``host`` (the default): the SSH port is published on the node that runs the server, and users
        are told that node's address (its ``ssh_host_label`` label, else its Swarm address). ``ingress``:
        published on every node through Swarm's routing mesh (needs IPVS in the nodes' kernels), and
        users connect to ``ssh_host``.
        """,
    )

    ssh_host_label = Unicode(
        "devdock.ssh-host",
        config=True,
        help="""
        Node label with the host name users should SSH to on that node (``docker node update
        --label-add devdock.ssh-host=gpu02.example.org gpu02``), for ``ssh_publish_mode = "host"``.
        """,
    )

    extra_task_spec = Dict(
        config=True,
        help="""
        Merged into every service's TaskTemplate (Docker's API names), e.g.
        ``{"LogDriver": {"Name": "journald"}}``. Plays the part of ``extra_host_config``, which services
        do not have; the same guarantees are checked (no Docker socket, capabilities dropped).
        """,
    )

    network_keeper = Bool(
        True,
        config=True,
        help="""
        Run a tiny global service (``<prefix>-network-keeper``: ``sleep`` from the desktop image, one
        task per node) on the users' network, so that every node stays attached to it. Without it, the
        first server to arrive on a node attaches the node, which updates the node object, and Swarm's
        constraint enforcer then rejects every task on that node holding GPUs (named generic
        resources): an upstream bug in Docker 20.10 and later. Default: True.
        """,
    )

    image_by_id = Bool(
        False,
        config=True,
        help="""
        Give services the image by its ID on the hub's engine (``sha256:...``) instead of its name. Nodes
        then use their own copy and never ask a registry (with a name, every node's Swarm agent tries to
        pull first, and waits on the network when there is none). Every node must hold the very same image:
        built once and loaded (``docker save | docker load``), or pulled by digest. Default: False.
        """,
    )

    network_encrypted = Bool(
        False,
        config=True,
        help="""
        Create the users' overlay network encrypted (IPsec between nodes: the proxy's traffic to servers,
        OAuth cookies and tokens included). Needs ESP (IP protocol 50) between nodes and IPsec support in
        their kernels, which is why it is off by default; an existing network is used as it is, with a
        warning when this is on and it is not encrypted. Default: False.
        """,
    )

    # --- state -------------------------------------------------------------------------------

    #: Swarm node id of the server's last run: its home lives there when ``swarm_home`` is ``pin``.
    swarm_node = Unicode()
    #: That node's host name, for users and admins.
    swarm_node_name = Unicode()
    #: Where users SSH to (``host`` publishing): the running task's node.
    swarm_ssh_host = Unicode()

    gpu_scope = "in this cluster"
    _gpu_count: int = 0
    _placement: tuple = ()

    def load_state(self, state):
        super().load_state(state)
        self.swarm_node = state.get("swarm_node", "")
        self.swarm_node_name = state.get("swarm_node_name", "")
        self.swarm_ssh_host = state.get("swarm_ssh_host", "")

    def get_state(self):
        state = super().get_state()
        for name in ("swarm_node", "swarm_node_name", "swarm_ssh_host"):
            if getattr(self, name):
                state[name] = getattr(self, name)
        return state

    def clear_state(self):
        # The node stays known (the home is there); where to SSH to is only true while running.
        super().clear_state()
        self.swarm_ssh_host = ""

    @property
    def ssh_connect_host(self) -> str:
        """The server's node when SSH is published per node, else ``ssh_host``."""
        return self.swarm_ssh_host if self.ssh_publish_mode == "host" and self.swarm_ssh_host else self.ssh_host

    async def read_ssh_host_key(self) -> str:
        """The task's container may be on another node, out of the hub engine's reach: not shown on Swarm."""
        return ""

    def _ssh_progress_message(self) -> str:
        if self.ssh_via_port and self.ssh_publish_mode == "host":
            return f"SSH port {self.ssh_port}, on the node Swarm picks for the server"
        return super()._ssh_progress_message()

    @property
    def location(self) -> str:
        """Where the server runs (or its home lives), for the admin page."""
        return self.swarm_node_name or self.swarm_node[:12]

    # --- GPUs: the scheduler allots them, devdock checks first and reads back ---------------

    async def _gpu_view(self) -> tuple[dict, dict]:
        """The cluster's GPUs per node, and which server holds which (two API calls: nodes, tasks)."""
        nodes = await self.docker("nodes")
        tasks = await self.docker("tasks", filters={"desired-state": "running"})
        return swarm.gpus_by_node(nodes, tasks, self.gpu_resource_kind), {t["ID"]: t for t in tasks}

    async def gpu_allocator(self) -> gpus.GPUAllocator:
        """A snapshot for the spawn form and the gauges: what usable nodes advertise, minus what tasks hold."""
        view, _ = await self._gpu_view()
        inventory, held = [], []
        for entry in view.values():
            for uuid in entry.ids:
                inventory.append(
                    gpus.GPU(index=len(inventory), uuid=uuid, name=f"{self.gpu_resource_kind} on {entry.hostname}")
                )
            held.extend(entry.held)
        allocator = gpus.GPUAllocator(inventory, 1)
        for uuid in held:
            allocator.adopt(f"held/{uuid}", [uuid])
        metrics.update_gpu_gauges(allocator)
        return allocator

    async def allocate_gpus(self, profile) -> list:
        """Check the profile fits Swarm and that one node has enough free GPUs; the scheduler picks which."""
        self._placement = tuple(profile.placement)
        if profile.gpus == "all" or profile.gpu_ids:
            raise web.HTTPError(
                500,
                f"Profile {profile.slug!r} asks for {'all GPUs' if profile.gpus == 'all' else 'particular GPUs'}, "
                "which Swarm cannot reserve: on Swarm a profile reserves a number of GPUs, and 'placement' "
                "chooses the nodes. An admin should change profile_list.",
            )
        if profile.mig:
            raise web.HTTPError(
                500,
                f"Profile {profile.slug!r} asks for MIG instances ({profile.mig}), which Swarm cannot reserve: its "
                "generic resources count whole GPUs. MIG profiles work with the single-engine spawner (devdock). An "
                "admin should change profile_list.",
            )
        self._gpu_count = int(profile.gpus or 0)
        home = await self._check_home_node()
        self.gpu_ids = []
        if not self._gpu_count:
            return []
        view, _ = await self._gpu_view()
        refusal = swarm.gpu_refusal(view, self._gpu_count, home, self.location)
        if refusal:
            raise web.HTTPError(409, refusal)
        return []

    async def _check_home_node(self) -> str | None:
        """With pinned homes, the home's node must be able to run the server; a node removed from the
        cluster (``docker node rm``) takes the pin with it, and the server starts afresh elsewhere.
        Returns the node id the server must run on (None: anywhere)."""
        if self.swarm_home != "pin":
            return None
        if not self.swarm_node:
            await self._adopt_home_on_this_engine()
        if not self.swarm_node:
            return None
        try:
            node = await self.docker("inspect_node", self.swarm_node)
        except APIError as e:
            if e.status_code != 404:
                raise
            self.log.warning("Home node %s of %s has left the cluster; unpinning", self.swarm_node, self._log_name)
            self._emit(8, f"Your home was on node {self.location}, which has left the cluster: starting a new home")
            self.swarm_node = self.swarm_node_name = ""
            return None
        if not swarm.node_usable(node):
            state = node.get("Status", {}).get("State")
            availability = node.get("Spec", {}).get("Availability")
            condition = state if state != "ready" else {"drain": "drained", "pause": "paused"}.get(availability)
            raise web.HTTPError(
                503,
                f"Your home is on node {self.location}, which is {condition} now, so "
                "your server cannot start. Ask an admin to bring the node back (or to remove it from the "
                "cluster, which starts you with a new home elsewhere).",
            )
        return self.swarm_node

    async def _adopt_home_on_this_engine(self) -> None:
        """A home volume made before this hub moved to Swarm lives on the hub's own engine: pin it there."""
        home = naming.home_volume_name(self.prefix, self.user_slug, self.server_slug)
        try:
            await self.docker("inspect_volume", home)
        except APIError as e:
            if e.status_code != 404:
                raise
            return
        info = await self.docker("info")
        node_id = (info.get("Swarm") or {}).get("NodeID", "")
        if node_id:
            self.log.info("Home volume %s of %s is on this engine's node %s: pinning", home, self._log_name, node_id)
            self.swarm_node, self.swarm_node_name = node_id, info.get("Name", "")

    async def container_settings(self):
        settings = await super().container_settings()
        if self._gpu_count:
            # The NVIDIA runtime reads the scheduler's choice (DOCKER_RESOURCE_<KIND>, its swarm-resource
            # setting) first; NVIDIA_VISIBLE_DEVICES stays "void", so that a node without that setting gives
            # the server no GPU rather than all of them.
            settings.environment["DEVDOCK_GPU_RESOURCE"] = self.gpu_resource_kind
        return settings

    async def get_command(self):
        """DockerSpawner reads the image's CMD on this engine; on Swarm the image may live on the nodes only.

        Then ``cmd`` (if set) or ``jupyterhub-singleuser`` (the CMD of devdock's images) is used.
        """
        try:
            return await super().get_command()
        except ImageNotFound:
            self.log.info("Image %s is not on the hub's engine; starting %s", self.image, self.cmd or "the default")
            return [*(self.cmd or ["jupyterhub-singleuser"]), *self.get_args()]

    # --- network and volumes -----------------------------------------------------------------

    async def ensure_network(self):
        """An attachable overlay network for users' servers, the hub and the proxy (and its keeper)."""
        async with hub_state().lock("network"):
            if self.create_network:
                await self._ensure_overlay()
            if self.network_keeper:
                await self._ensure_network_keeper()

    async def _ensure_overlay(self) -> None:
        network = None
        try:
            network = await self.docker("inspect_network", self.network_name)
        except APIError as e:
            if e.status_code != 404:
                raise
        if network is None:
            self.log.info("Creating overlay network %s", self.network_name)
            await self.docker(
                "create_network",
                self.network_name,
                driver="overlay",
                attachable=True,
                check_duplicate=True,
                options={"encrypted": "true"} if self.network_encrypted else {},
                labels={MANAGED_LABEL: "true", **self.extra_labels},
            )
        elif network.get("Scope") != "swarm":
            raise web.HTTPError(
                500,
                f"The Docker network {self.network_name} is a {network.get('Driver')} network; devdock on "
                "Swarm needs an overlay network. An admin should remove it or set network_name.",
            )
        elif self.network_encrypted and "encrypted" not in (network.get("Options") or {}):
            self.log.warning("devdock: network_encrypted is on, but %s exists unencrypted", self.network_name)

    async def _ensure_network_keeper(self) -> None:
        """The global keeper service of the users' network (see ``network_keeper``), once per hub."""
        name = f"{self.prefix}-network-keeper"
        if f"keeper:{name}" in hub_state().done:
            return
        existing = await self.docker("services", filters={"name": name})
        if not [s for s in existing if s.get("Spec", {}).get("Name") == name]:
            # The site's image (not a profile's): every node that runs servers has it.
            image = await self._image_reference((self._configured or {}).get("image") or self.image)
            self.log.info("Creating the global service %s on %s", name, self.network_name)
            spec = swarm.keeper_spec(name, image, self.network_name, self._keeper_labels())
            await self.docker("create_service", **spec)
        hub_state().done.add(f"keeper:{name}")

    def _keeper_labels(self) -> dict:
        return {MANAGED_LABEL: "true", HUB_LABEL: self.hub_id, **self.extra_labels}

    async def ensure_volumes(self):
        """Nothing up front: the node that runs the task creates the home volume, with devdock's labels.

        ``home_size`` is a single-engine setting (the helper attaches images on the hub's engine): on a Swarm the
        volume driver bounds homes, or nothing does; the hub says so once.
        """
        if self.home_size and "home_size" not in hub_state().done:
            hub_state().done.add("home_size")
            self.log.warning(
                "devdock: home_size (%s) is not applied on a Swarm: homes are bounded by their volume driver "
                "(volume_driver), or not at all",
                self.home_size,
            )

    def _volume_options(self) -> dict:
        ns = self.template_namespace()
        return {k: v.format(**ns) if isinstance(v, str) else v for k, v in self.volume_driver_options.items()}

    def _constraints(self) -> list[str]:
        constraints = [*self.placement_constraints, *self._placement]
        if self.swarm_home == "pin" and self.swarm_node:
            constraints.append(f"node.id == {self.swarm_node}")
        return constraints

    # --- the service -------------------------------------------------------------------------

    async def _image_reference(self, image: str) -> str:
        """``image`` as services get it: its name, or its ID with ``image_by_id``."""
        if not self.image_by_id:
            return image
        try:
            return (await self.docker("inspect_image", image))["Id"]
        except ImageNotFound as e:
            raise web.HTTPError(
                503,
                f"The image {image} is not on the hub's engine, so its ID is unknown (image_by_id is on). An "
                "admin should load it there too, or switch image_by_id off and use a registry.",
            ) from e

    async def create_object(self):
        settings = await self.container_settings()
        settings.image = await self._image_reference(settings.image)
        options = swarm.SwarmSettings(
            constraints=self._constraints(),
            gpu_kind=self.gpu_resource_kind,
            gpus=self._gpu_count,
            publish_mode=self.ssh_publish_mode,
            volume_driver=self.volume_driver if self.swarm_home == "shared" else "",
            volume_driver_options=self._volume_options(),
            volume_labels=self._labels(),
            extra_task_spec=await self._resolve_extra(self.extra_task_spec),
        )
        try:
            spec = swarm.service_spec(settings, options)
        except (UnsafeConfiguration, ValueError) as e:
            self.log.error("Refusing to spawn %s: %s", self._log_name, e)
            raise web.HTTPError(500, f"The server configuration is unsafe or invalid: {e}") from e
        self.log.debug("Creating service %s with %s", self.object_name, spec)
        return await self.docker("create_service", **spec)

    async def get_task(self) -> dict | None:
        """The newest task of this server's service (None when the service has none, or is gone)."""
        try:
            tasks = await self.docker("tasks", filters={"service": self.object_name})
        except APIError as e:
            if e.status_code == 404:
                return None
            raise
        tasks = [t for t in tasks if not self.object_id or t.get("ServiceID") == self.object_id]
        return max(tasks, key=lambda t: t.get("CreatedAt", ""), default=None)

    async def start_object(self):
        """Wait until the service's task runs; fail fast, with Swarm's reason, when it cannot."""
        # JupyterHub cancels the whole start after start_timeout: end a little before, with Swarm's words.
        began = getattr(self, "_start_began", None) or time.monotonic()
        deadline = began + max(5, self.start_timeout - 3)
        created = time.monotonic()
        no_node_since = None
        replaced = 0
        delay = 0.05
        problem = ""
        while time.monotonic() < deadline:
            task = await self.get_task()
            problem = swarm.task_problem(task or {})
            if (task or {}).get("Status", {}).get("State") == "pending" and swarm.NO_NODE in problem:
                no_node_since = no_node_since or time.monotonic()
            now = time.monotonic()
            no_node_for = now - no_node_since if no_node_since else 0
            has_ssh_port = bool(self.ssh_via_port and self.ssh_port)
            step = swarm.start_step(task, now - created, no_node_for, replaced, has_ssh_port)
            if step == swarm.RUNNING:
                await self._record_placement(task)
                return
            if step == swarm.WAIT:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            if step == swarm.GONE:
                raise web.HTTPError(500, f"The service {self.object_name} disappeared while it was starting.")
            if step == swarm.NO_NODE_FAIL:
                raise web.HTTPError(409, self._no_node_message(problem))
            if step in (swarm.RECREATE, swarm.NEW_SSH_PORT):
                replaced += 1
                if step == swarm.RECREATE:
                    self.log.warning("Task of %s rejected by Swarm (%s); creating it again", self._log_name, problem)
                    await self.recreate_object()
                else:
                    await self.recreate_with_new_ssh_port(problem)
                created = time.monotonic()
                continue
            state = task.get("Status", {}).get("State")
            raise web.HTTPError(500, await self._exit_report() or f"The server did not start ({state}).")
        raise web.HTTPError(
            504, f"The server was not running after {self.start_timeout} s (Swarm says: {problem or 'nothing'})."
        )

    def _no_node_message(self, problem: str) -> str:
        what = []
        if self._gpu_count:
            what.append(f"{self._gpu_count} free GPU{'s' if self._gpu_count > 1 else ''}")
        if self._constraints():
            what.append(f"placement {' and '.join(self._constraints())}")
        return (
            f"No node of the cluster can run this server now ({problem}). It needs "
            f"{', '.join(what) or 'a ready, active node'}. Try again later or choose another "
            "profile; an admin can see which nodes are full."
        )

    async def _record_placement(self, task: dict) -> None:
        """Remember where the task runs (node, GPUs): shown to the user and the admin, pins the home."""
        node = await self.docker("inspect_node", task["NodeID"])
        self.swarm_node = task["NodeID"]
        self.swarm_node_name = node.get("Description", {}).get("Hostname", "")
        self.swarm_ssh_host = swarm.node_ssh_host(node, self.ssh_host_label)
        self.gpu_ids = swarm.task_generic_resources(task, self.gpu_resource_kind)
        where = f"Running on node {self.swarm_node_name}"
        if self.gpu_ids:
            where += f" with GPU{'s' if len(self.gpu_ids) > 1 else ''} {', '.join(self.gpu_ids)}"
        self._emit(45, where)
        if self.ssh_via_port and self.ssh_port:
            self._emit(50, f"SSH: {self.ssh_command}")

    async def get_ip_and_port(self):
        """The task's own address on the overlay network (no virtual IP, no DNS needed by the proxy)."""
        task = await self.get_task()
        address = swarm.task_address(task or {}, self.network_name)
        if not address:
            raise web.HTTPError(500, f"The server's task has no address on the network {self.network_name}.")
        return address, self.port

    async def _exit_report(self) -> str:
        task = await self.get_task()
        state = (task or {}).get("Status", {}).get("State", "gone")
        if state == "running" or state in swarm.STARTING_STATES:
            return ""
        try:
            logs = await asyncio.wrap_future(
                self.executor.submit(
                    lambda: b"".join(self.client.service_logs(self.object_id, stdout=True, stderr=True, tail=8))
                )
            )
        except (APIError, DockerException) as e:
            logs = f"(no logs: {e})"
        reason = swarm.task_problem(task or {}) or "no reason given"
        if state in ("rejected", "gone"):
            return f"Swarm could not start the server ({state}: {reason})."
        return f"The server stopped right after starting ({state}: {reason}). Its last output: {last_lines(logs)}"

    async def _poll_object(self):
        try:
            task = await self.get_task()
        except APIError as e:
            if e.status_code < 500:
                raise
            # A manager without a leader (an election, a lost quorum) says nothing about the server: keep it.
            self.log.error("devdock: Swarm cannot answer for %s (%s); keeping it as running", self._log_name, e)
            return None
        return swarm.task_poll(task)

    async def stop_object(self):
        """Nothing: removing the service stops its task (with ``stop_grace_seconds``)."""

    async def remove_object(self):
        """Remove the service and wait until its task is gone, so that its GPUs and port are free."""
        if not self.object_id:
            # A hub that crashed mid-spawn knows the name only.
            try:
                self.object_id = (await self.docker("inspect_service", self.object_name))["ID"]
            except APIError as e:
                if e.status_code != 404:
                    raise
                return
        try:
            await self.docker("remove_service", self.object_id)
        except APIError as e:
            if e.status_code != 404:
                raise
        deadline = time.monotonic() + self.stop_grace_seconds + 10
        delay = 0.05
        while time.monotonic() < deadline:
            try:
                containers = await self.docker("tasks", filters={"label": f"{OWNER_LABEL}={self.user.name}"})
            except (APIError, RequestsConnectionError):
                return
            mine = [t for t in containers if t.get("ServiceID") == self.object_id]
            if not mine:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    # --- SSH -----------------------------------------------------------------------------------

    async def held_host_ports(self) -> dict[int, str | None]:
        """Every port published in the cluster, from one ``docker service ls``."""
        return swarm.held_service_ports(await self.docker("services"))

    async def push_ssh_keys(self, keys: list) -> bool:
        """Put the new keys into the running container when it runs on the hub's engine.

        Docker cannot reach into containers on other nodes: there the keys apply at the next start, and
        the SSH page says so (False).
        """
        task = await self.get_task()
        container = (task or {}).get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
        if not container:
            return False
        try:
            await self.write_authorized_keys(container, keys)
        except APIError as e:
            if e.status_code != 404:
                raise
            self.log.info("%s runs on another node; its new SSH keys apply at its next start", self._log_name)
            return False
        return True

    def _keep_failed_object(self) -> bool:
        """Never on Swarm: a kept service could still start later and hold GPUs."""
        if self.keep_failed_containers:
            self.log.warning("On Swarm the service of a failed start is removed (keep_failed_containers ignored)")
        return False

    # --- reconciliation ------------------------------------------------------------------------

    async def _find_own_objects(self) -> list:
        """This hub's services (users' servers only); running means a task of it runs now."""
        services = await self.docker("services", filters={"label": f"{HUB_LABEL}={self.hub_id}"})
        tasks = await self.docker("tasks", filters={"label": f"{HUB_LABEL}={self.hub_id}", "desired-state": "running"})
        live = {
            t.get("ServiceID") for t in tasks if t.get("Status", {}).get("State") in swarm.STARTING_STATES | {"running"}
        }
        found = []
        for service in services:
            key = swarm.service_key(service)
            if key is not None:
                found.append(
                    reconcile.Found(
                        id=service["ID"], name=service["Spec"]["Name"], key=key, running=service["ID"] in live
                    )
                )
        return found

    async def _remove_found(self, found) -> None:
        try:
            await self.docker("remove_service", found.id)
        except APIError as e:
            if e.status_code != 404:
                self.log.warning("Could not remove service %s: %s", found.name, e)

    async def start(self):
        if self.ssh_via_port and self.ssh_bind_address not in ("", "0.0.0.0", "::"):
            raise web.HTTPError(
                500,
                f"ssh_bind_address {self.ssh_bind_address} cannot be honoured on Swarm: published ports listen on "
                "every address of the server's node (or of every node). An admin should set it to 0.0.0.0 and "
                "limit access to the SSH port range with the nodes' firewalls.",
            )
        return await super().start()

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

The hub-wide half of these changes (services found and removed at reconciliation, the cluster's GPUs and ports, the
overlay network and its keeper) is :class:`~devdock_spawner.hubwide_swarm.SwarmHub`'s. What the base decides from
``object_type`` (no host-port probe, no stop before removal, no kept failed object, no home volume made on the hub's
engine) is not said again here. **The seams this class overrides**, for whoever writes another variant:

- ``object_type``, ``object_id_key``, ``hub_class``: what the Docker objects are, and the hub-wide object's variant;
- ``_default_pull_policy``: nodes pull (or find) images themselves;
- ``allocate_gpus``: checks that the cluster can take the GPUs (the scheduler picks them);
- ``create_object``, ``start_object``, ``remove_object``: a one-task service, waited for and removed with its task;
- ``get_ip_and_port``, ``_poll_object``, ``_exit_report``: read from the service's newest task;
- ``get_command``: the image may live on the nodes only;
- ``ssh_connect_host``, ``_ssh_progress_message``, ``_local_container_id``: where SSH and the keys reach the server.
"""

from __future__ import annotations

import asyncio
import time

from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, List, Unicode, default, validate

from . import naming, swarm
from .container import UnsafeConfiguration, last_lines
from .hubwide_swarm import SwarmHub
from .naming import OWNER_LABEL
from .spawner import DevDockSpawner


class DevDockSwarmSpawner(DevDockSpawner):
    """DevDockSpawner for Docker Swarm: each server is a one-task service, placed by the Swarm scheduler."""

    object_type = "service"
    object_id_key = "ID"
    hub_class = SwarmHub

    @default("pull_policy")
    def _default_pull_policy(self):
        """``skip``: every node finds (or pulls) the image itself when it runs the task."""
        return "skip"

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
    swarm_node = Unicode().tag(state="server")
    #: That node's host name, for users and admins.
    swarm_node_name = Unicode().tag(state="server")
    #: Where users SSH to (``host`` publishing): the running task's node.
    swarm_ssh_host = Unicode().tag(state="run")

    _gpu_count: int = 0
    _placement: tuple = ()

    @property
    def ssh_connect_host(self) -> str:
        """The server's node when SSH is published per node, else ``ssh_host``."""
        return self.swarm_ssh_host if self.ssh_publish_mode == "host" and self.swarm_ssh_host else self.ssh_host

    def _ssh_progress_message(self) -> str:
        if self.ssh_via_port and self.ssh_publish_mode == "host":
            return f"SSH port {self.ssh_port}, on the node Swarm picks for the server"
        return super()._ssh_progress_message()

    @property
    def location(self) -> str:
        """Where the server runs (or its home lives), for the admin page."""
        return self.swarm_node_name or self.swarm_node[:12]

    # --- GPUs: the scheduler allots them, devdock checks first and reads back ---------------

    async def allocate_gpus(self, profile) -> list:
        """Check that the cluster can take the profile's GPUs now (one node, within ``gpu_max_per_user``); the
        scheduler picks the devices when the task starts, and :meth:`_record_placement` reads back which."""
        self._placement = tuple(profile.placement)
        home = await self._check_home_node()
        self.gpu_ids = []
        await self.devdock_hub.allocate_gpus(self.server_key, profile, self.gpu_max_per_user, home, self.location)
        self._gpu_count = int(profile.gpus or 0)
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

    async def get_command(self):
        """DockerSpawner reads the image's CMD on this engine; on Swarm the image may live on the nodes only.

        Then ``cmd`` (if set) or ``jupyterhub-singleuser`` (the CMD of devdock's images) is used.
        """
        try:
            return await super().get_command()
        except ImageNotFound:
            self.log.info("Image %s is not on the hub's engine; starting %s", self.image, self.cmd or "the default")
            return [*(self.cmd or ["jupyterhub-singleuser"]), *self.get_args()]

    def _volume_options(self) -> dict:
        ns = self.template_namespace()
        return {k: v.format(**ns) if isinstance(v, str) else v for k, v in self.volume_driver_options.items()}

    def _constraints(self) -> list[str]:
        constraints = [*self.placement_constraints, *self._placement]
        if self.swarm_home == "pin" and self.swarm_node:
            constraints.append(f"node.id == {self.swarm_node}")
        return constraints

    # --- the service -------------------------------------------------------------------------

    async def create_object(self):
        settings = await self.container_settings()
        settings.image = await self.devdock_hub.image_reference(settings.image)
        if self._gpu_count:
            # The NVIDIA runtime reads the scheduler's choice (DOCKER_RESOURCE_<KIND>, its swarm-resource
            # setting) first; NVIDIA_VISIBLE_DEVICES stays "void", so that a node without that setting gives
            # the server no GPU rather than all of them.
            settings.environment["DEVDOCK_GPU_RESOURCE"] = self.gpu_resource_kind
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

    async def _local_container_id(self) -> str:
        """The task's container; the hub's engine reaches it only when it runs there (else a 404: keys apply at the
        next start, and no host key is shown)."""
        task = await self.get_task()
        return (task or {}).get("Status", {}).get("ContainerStatus", {}).get("ContainerID") or ""

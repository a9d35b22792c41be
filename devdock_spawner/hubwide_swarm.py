"""The hub-wide object on Docker Swarm: services instead of containers, the scheduler's GPUs, an overlay network.

What :class:`SwarmHub` changes of :class:`~devdock_spawner.hubwide.DevDockHub`: reconciliation finds and removes
services; GPUs are the nodes' generic resources (a fresh snapshot for every form and start, since the scheduler, not
devdock, hands them out); published SSH ports are the cluster's; the users' network is an attachable overlay with a
global keeper service (see ``network_keeper``); ``home_size`` does not apply and the hub says so once.
"""

from __future__ import annotations

from docker.errors import APIError, ImageNotFound
from tornado import web

from . import gpu as gpus
from . import metrics, reconcile, swarm
from .hubwide import DevDockHub
from .naming import HUB_LABEL, MANAGED_LABEL
from .profiles import Profile


class SwarmHub(DevDockHub):
    """Everything one hub does once for all its servers, on a Docker Swarm."""

    object_type = "service"
    gpu_scope = "in this cluster"
    gpu_line = False
    settings_names = (
        *DevDockHub.settings_names, "gpu_resource_kind", "network_encrypted", "network_keeper", "image_by_id",
        "home_size",
    )  # fmt: skip

    def __init__(self, spawner, **kwargs):
        super().__init__(spawner, **kwargs)
        # The site's image (not a profile's): every node that runs servers has it (the network keeper runs it).
        self.settings.site_image = (spawner._configured or {}).get("image") or spawner.image
        if self.settings.home_size:
            self.log.warning(
                "devdock: home_size (%s) is not applied on a Swarm: homes are bounded by their volume driver "
                "(volume_driver), or not at all",
                self.settings.home_size,
            )

    def refuse_unsupported(self, spawner) -> None:
        if spawner.ssh_via_port and spawner.ssh_bind_address not in ("", "0.0.0.0", "::"):
            raise web.HTTPError(
                500,
                f"ssh_bind_address {spawner.ssh_bind_address} cannot be honoured on Swarm: published ports listen on "
                "every address of the server's node (or of every node). An admin should set it to 0.0.0.0 and "
                "limit access to the SSH port range with the nodes' firewalls.",
            )

    # --- reconciliation ----------------------------------------------------------------------

    async def find_own_objects(self) -> list[reconcile.Found]:
        """This hub's services (users' servers only); running means a task of it runs now."""
        services = await self.docker("services", filters=self._own_label())
        tasks = await self.docker("tasks", filters={**self._own_label(), "desired-state": "running"})
        live = {
            t.get("ServiceID") for t in tasks if t.get("Status", {}).get("State") in swarm.STARTING_STATES | {"running"}
        }
        return [
            reconcile.Found(id=s["ID"], name=s["Spec"]["Name"], key=key, running=s["ID"] in live)
            for s in services
            if (key := swarm.service_key(s)) is not None
        ]

    async def remove_found(self, found: reconcile.Found) -> None:
        try:
            await self.docker("remove_service", found.id)
        except APIError as e:
            if e.status_code != 404:
                self.log.warning("Could not remove service %s: %s", found.name, e)

    # --- GPUs: the scheduler allots them, devdock checks first and reads back -----------------

    async def gpu_view(self) -> tuple[dict, list]:
        """The cluster's GPUs per node, and the running tasks (two API calls: nodes, tasks)."""
        nodes = await self.docker("nodes")
        tasks = await self.docker("tasks", filters={"desired-state": "running"})
        return swarm.gpus_by_node(nodes, tasks, self.settings.gpu_resource_kind), tasks

    async def gpu_allocator(self) -> gpus.GPUAllocator:
        """A snapshot for the spawn form and the gauges: what usable nodes advertise, minus what tasks hold."""
        view, _ = await self.gpu_view()
        kind = self.settings.gpu_resource_kind
        inventory, held = [], []
        for entry in view.values():
            for uuid in entry.ids:
                inventory.append(gpus.GPU(index=len(inventory), uuid=uuid, name=f"{kind} on {entry.hostname}"))
            held.extend(entry.held)
        allocator = gpus.GPUAllocator(inventory, 1)
        for uuid in held:
            allocator.adopt(f"held/{uuid}", [uuid])
        metrics.update_gpu_gauges(allocator)
        return allocator

    async def allocate_gpus(self, key: str, profile: Profile, per_owner: int, home: str | None = None,
                            home_name: str = "") -> list:  # fmt: skip
        """Check that one node (the home's, when pinned) has the GPUs and that the owner's cap allows them; the
        scheduler picks which when the task starts. Returns [] (no GPUs are handed out here)."""
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
        wanted = int(profile.gpus or 0)
        if not wanted:
            return []
        view, tasks = await self.gpu_view()
        held = swarm.owner_held_gpus(tasks, self.settings.gpu_resource_kind, key)
        refusal = gpus.owner_cap_refusal(held, wanted, per_owner) or swarm.gpu_refusal(view, wanted, home, home_name)
        if refusal:
            raise web.HTTPError(409, refusal)
        return []

    def release_gpus(self, key: str) -> None:
        """Nothing: removing the service gives its GPUs back to the scheduler."""

    # --- ports and network -------------------------------------------------------------------

    async def held_host_ports(self) -> dict[int, str | None]:
        """Every port published in the cluster, from one ``docker service ls``."""
        return swarm.held_service_ports(await self.docker("services"))

    async def ensure_network(self) -> None:
        """An attachable overlay network for users' servers, the hub and the proxy (and its keeper)."""
        async with self.lock("network"):
            if self.settings.create_network:
                await self._ensure_overlay()
            if self.settings.network_keeper:
                await self._ensure_network_keeper()

    async def _ensure_overlay(self) -> None:
        name, encrypted = self.settings.network_name, self.settings.network_encrypted
        network = None
        try:
            network = await self.docker("inspect_network", name)
        except APIError as e:
            if e.status_code != 404:
                raise
        if network is None:
            self.log.info("Creating overlay network %s", name)
            await self.docker(
                "create_network",
                name,
                driver="overlay",
                attachable=True,
                check_duplicate=True,
                options={"encrypted": "true"} if encrypted else {},
                labels={MANAGED_LABEL: "true", **self.settings.extra_labels},
            )
        elif network.get("Scope") != "swarm":
            raise web.HTTPError(
                500,
                f"The Docker network {name} is a {network.get('Driver')} network; devdock on "
                "Swarm needs an overlay network. An admin should remove it or set network_name.",
            )
        elif encrypted and "encrypted" not in (network.get("Options") or {}):
            self.log.warning("devdock: network_encrypted is on, but %s exists unencrypted", name)

    async def _ensure_network_keeper(self) -> None:
        """The global keeper service of the users' network (see ``network_keeper``), once per hub."""
        name = f"{self.settings.prefix}-network-keeper"
        if f"keeper:{name}" in self._done:
            return
        existing = await self.docker("services", filters={"name": name})
        if not [s for s in existing if s.get("Spec", {}).get("Name") == name]:
            image = await self.image_reference(self.settings.site_image)
            self.log.info("Creating the global service %s on %s", name, self.settings.network_name)
            labels = {MANAGED_LABEL: "true", HUB_LABEL: self.settings.hub_id, **self.settings.extra_labels}
            await self.docker("create_service", **swarm.keeper_spec(name, image, self.settings.network_name, labels))
        self.once(f"keeper:{name}")

    async def image_reference(self, image: str) -> str:
        """``image`` as services get it: its name, or its ID with ``image_by_id``."""
        if not self.settings.image_by_id:
            return image
        try:
            return (await self.docker("inspect_image", image))["Id"]
        except ImageNotFound as e:
            raise web.HTTPError(
                503,
                f"The image {image} is not on the hub's engine, so its ID is unknown (image_by_id is on). An "
                "admin should load it there too, or switch image_by_id off and use a registry.",
            ) from e

"""The GPU part of DevDockSpawner: settings, the hub's allocator, allotting and giving back (a mixin).

The pure logic lives in gpu.py (inventory, allocator, DeviceRequests); the profiles and the spawn form that
ask for GPUs are in spawner_profiles.py.
"""

from __future__ import annotations

import asyncio

from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, Int, List, Unicode
from traitlets.config import LoggingConfigurable

from . import gpu as gpus
from . import metrics, naming
from .hubstate import hub_state
from .profiles import Profile


class GPUMixin(LoggingConfigurable):
    """GPUs allotted to servers, exclusively unless configured otherwise.

    Mixed into :class:`~devdock_spawner.spawner.DevDockSpawner`; uses its ``docker()`` seam and names.
    """

    # --- GPUs ------------------------------------------------------------------------------

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

    gpu_max_per_user = Int(
        0,
        config=True,
        help="""
        The most GPUs one person may hold across all their servers (default and named), so that nobody takes
        every GPU by starting several servers. A start past it gets a 409 with a sentence. 0: no cap. devdock's
        jupyterhub_config.py sets 2 (``DEVDOCK_GPU_PER_USER``). Default: 0.
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

    #: Where the spawn form says the GPUs are.
    gpu_scope = "on this server"

    #: UUIDs of the GPUs this server holds (state; empty when stopped).
    gpu_ids = List(Unicode())

    async def gpu_allocator(self) -> gpus.GPUAllocator:
        """The hub's GPU allocator: built once from the inventory, then from the running containers."""
        await self.reconcile()
        state = hub_state()
        async with state.lock("gpu"):
            if state.gpu_allocator is None:
                state.gpu_allocator = await self._build_gpu_allocator()
        return state.gpu_allocator

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
        # A restarted hub finds who holds what on the containers themselves (reconciliation ran first: what
        # is left are the servers the database knows and the running ones it does not, which keep theirs).
        containers = await self.docker("containers", all=True, filters={"label": f"{naming.HUB_LABEL}={self.hub_id}"})
        for key, uuids in gpus.gpus_from_containers(containers).items():
            allocator.adopt(key, uuids)
        metrics.update_gpu_gauges(allocator)
        return allocator

    async def allocate_gpus(self, profile: Profile) -> list[gpus.GPU]:
        allocator = await self.gpu_allocator()
        try:
            uuids = allocator.allocate(
                self.server_key, profile.gpus, list(profile.gpu_ids) or None, per_owner=self.gpu_max_per_user
            )
        except gpus.NotEnoughGPUs as e:
            raise web.HTTPError(409, str(e)) from e
        finally:
            metrics.update_gpu_gauges(allocator)
        self.gpu_ids = uuids
        return [allocator.by_uuid[u] for u in uuids]

    def release_gpus(self) -> None:
        allocator = hub_state().gpu_allocator
        if allocator is not None:
            allocator.release(self.server_key)
            metrics.update_gpu_gauges(allocator)
        self.gpu_ids = []

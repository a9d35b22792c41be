"""The GPU part of DevDockSpawner: settings, the hub's allocator, allotting and giving back (a mixin).

The pure logic lives in gpu.py (inventory, allocator, DeviceRequests); the profiles and the spawn form that
ask for GPUs are in spawner_profiles.py.
"""

from __future__ import annotations

from docker.errors import APIError
from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, Int, List, Unicode
from traitlets.config import LoggingConfigurable

from . import gpu as gpus
from . import gpu_monitor, naming
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

    gpu_monitor_command = List(
        Unicode(),
        ["nvidia-smi"],
        config=True,
        help="""
        The command that reads the GPUs on the host, as a list (``nvidia-smi`` of the NVIDIA driver); devdock adds
        its ``--query-gpu`` and ``--query-compute-apps`` arguments. What it reads (each GPU's use, which process
        of which server holds how much memory, uncorrectable ECC errors, a GPU off the bus) goes to the admin page,
        the user's home page, ``/hub/metrics`` and the GPUs' health. It runs in the hub's own process, every
        ``usage_interval`` seconds, never in a user's container. Missing: the hub says so once and goes on without.
        Empty: off.
        """,
    )

    gpu_monitor_proc = Unicode(
        "/proc",
        config=True,
        help="""
        Where the host's processes are (``/proc``): a GPU process's ``cgroup`` file there names its container. A
        hub in a container needs the host's PID namespace (``pid: host``) for this. Default: ``/proc``.
        """,
    )

    gpu_kernel_log = Unicode(
        "/dev/kmsg",
        config=True,
        help="""
        The kernel log, read for the NVIDIA driver's XID errors (``NVRM: Xid (PCI:...): 79, ...``); only new
        messages count. Unreadable (a hub without the right to read it): said once, and XIDs are not seen. Empty:
        off. Default: ``/dev/kmsg``.
        """,
    )

    gpu_health_checks = Bool(
        True,
        config=True,
        help="""
        Take a GPU out of the pool for new servers when it reports an XID error that is not an application's
        (13, 31, 43, 45, 68, 109 are), uncorrectable ECC errors or pending page retirements, or falls off the
        bus; admins see why on the admin page and clear it there; users on it see a notice. False: GPUs are
        never taken out (the readings still show). Default: True.
        """,
    )

    gpu_busy_percent = Int(
        10,
        config=True,
        help="""
        A server whose GPUs (all held by it alone) are at least this busy counts as active for the idle culler:
        a training run keeps its GPU while nobody types. The maximum age (``cull_gpu_max_age``) still applies.
        0: GPU use never counts as activity. Default: 10 (percent).
        """,
    )

    #: UUIDs of the GPUs this server holds (state; empty when stopped).
    gpu_ids = List(Unicode()).tag(state="run")

    async def allocate_gpus(self, profile: Profile) -> list[gpus.GPU]:
        """The GPUs ``profile`` asks for, from the hub's allocator (at most ``gpu_max_per_user`` per person)."""
        allotted = await self.devdock_hub.allocate_gpus(self.server_key, profile, self.gpu_max_per_user)
        self.gpu_ids = [g.uuid for g in allotted]
        return allotted

    def release_gpus(self) -> None:
        self.devdock_hub.release_gpus(self.server_key)
        self.gpu_ids = []

    def gpu_labels(self) -> dict:
        """The server's GPUs on its container: a restarted hub finds who holds which."""
        return {naming.GPU_LABEL: ",".join(self.gpu_ids)} if self.gpu_ids else {}

    async def delete_forever_part(self, erase: bool, requester: str) -> None:
        await super().delete_forever_part(erase, requester)
        self.release_gpus()

    async def start_object(self):
        """A GPU server on an engine without a working NVIDIA runtime gets a sentence, not Docker's words."""
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
            raise

    @property
    def gpu_use_now(self) -> gpu_monitor.ServerGPUUse | None:
        return self.devdock_hub.gpu_use.get(self.server_key)

    @property
    def gpu_health_notice(self) -> str:
        """A sentence for this server's user when a GPU it holds was taken out of the pool ("" when none)."""
        return self.devdock_hub.gpu_health_notice(list(self.gpu_ids))

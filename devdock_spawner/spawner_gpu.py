"""The GPU and profile part of DevDockSpawner: settings, the spawn form, allocation (a mixin).

The pure logic lives in gpu.py (inventory, allocator, DeviceRequests) and profiles.py (profiles,
user_options validation).
"""

from __future__ import annotations

import asyncio
import copy
import os

from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from . import gpu as gpus
from . import metrics, naming
from .hubstate import hub_state
from .profiles import OVERRIDABLE, Profile, load_profiles, visible_profiles


class GPUMixin(LoggingConfigurable):
    """Profiles on the spawn form and GPUs allotted to servers.

    Mixed into :class:`~devdock_spawner.spawner.DevDockSpawner`; uses its ``docker()`` seam and names.
    """

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
        key = self.server_key
        chosen = self.user_options.get("profile") if isinstance(self.user_options, dict) else None
        rows = []
        for p in profiles:
            total = len(p.gpu_ids) if p.gpu_ids else allocator.total
            available, reason = True, ""
            if p.gpus:
                refusal = allocator.refusal(p.gpus, list(p.gpu_ids) or None, key, self.gpu_max_per_user)
                available = not refusal
                if refusal:
                    if allocator.total == 0:
                        reason = "No GPUs on this server."
                    elif "per person" in refusal:
                        reason = f"At most {self.gpu_max_per_user} GPUs per person, across your servers."
                    else:
                        reason = f"Not enough free GPUs right now ({allocator.free(key)} free)."
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
            .render(profiles=rows, gpu_total=allocator.total, gpu_free=allocator.free(key), gpu_scope=self.gpu_scope)
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

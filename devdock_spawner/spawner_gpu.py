"""The GPU part of DevDockSpawner: settings, the hub's allocator, allotting and giving back (a mixin).

The pure logic lives in gpu.py (inventory, allocator, DeviceRequests); the profiles and the spawn form that
ask for GPUs are in spawner_profiles.py.
"""

from __future__ import annotations

import asyncio
import time

from docker.errors import APIError
from tornado import web
from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from . import culler, gpu_monitor, naming, quota, reservation
from . import gpu as gpus
from .accounting import utc_now
from .gpu_queue import Wait, ordinal, wait_words
from .profiles import InvalidOptions, Profile, validate_user_options


def _checked(proposal, check, error: type[Exception], prefix: str = ""):
    """A trait's value after ``check`` (a pure module's validation); its sentence as a TraitError otherwise."""
    try:
        check(proposal["value"])
    except error as e:
        raise TraitError(f"{prefix}{e}") from e
    return proposal["value"]


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

    gpu_queue = Bool(
        True,
        config=True,
        help="""
        When the GPUs a start asks for are all taken, the start waits in line instead of being refused: the spawn
        page shows its place and an estimate, updated as the line moves; it holds no container and no GPU while it
        waits; the server starts by itself at its turn (first come, first served for each kind of GPU). The user
        leaves the line by cancelling the start; a restarted hub keeps the line. Requests no wait can meet (more
        GPUs than the host has, ``gpu_max_per_user``) are refused at once. False: refused with a sentence when
        taken. On a Swarm, starts are refused when full (the scheduler picks the GPUs). Default: True.
        """,
    )

    gpu_queue_max_wait = Int(
        7200,
        config=True,
        help="""
        The longest a start waits in line for GPUs, in seconds; then it ends with a sentence. JupyterHub's
        ``start_timeout`` of such a start is this much longer. Default: 7200 (2 hours).
        """,
    )

    gpu_queue_order = CaselessStrEnum(
        ["fifo", "fair-share"],
        "fifo",
        config=True,
        help="""
        The order of the line for GPUs: ``fifo``, first come first served; ``fair-share``, whoever used the GPUs
        least lately first (GPU-seconds held, from the accounting database, halved every
        ``gpu_fair_share_half_life``, as Slurm's fair-share factor decays usage), then by arrival. Default: fifo.
        """,
    )

    gpu_fair_share_half_life = Int(
        7 * 86400,
        config=True,
        help="Seconds after which past GPU use counts half in the ``fair-share`` order. Default: 604800 (a week).",
    )

    gpu_quotas = Dict(
        config=True,
        help="""
        GPU-hours per day, week or month and GPUs at once, per user, per JupyterHub group (each member gets the
        group's allowance; an identity provider's groups through the authenticator's ``manage_groups``) and by
        default: ``{"default": {"gpu_hours": 40, "period": "week", "gpus_at_once": 2}, "groups": {"students":
        {"gpu_hours": 10}}, "users": {"ana": {"gpu_hours": 200, "period": "month"}}}``. A user's own rule wins,
        else their groups' most generous, else the default. Used hours come from the accounting database
        (``accounting_url``); a start past them is refused with a sentence, and the spawn form says what is
        left. Empty (the default): no quotas.
        """,
    )

    gpu_quota_exceeded = CaselessStrEnum(
        ["refuse", "wait"],
        "refuse",
        config=True,
        help="""
        What happens to a GPU start past its user's GPU-hours (``gpu_quotas``): ``refuse`` (the default), refused
        with a sentence saying when the period starts again; ``wait``, it waits in line behind every start within
        its quota and gets GPUs only when nobody within quota waits for them (with ``gpu_queue`` on; else
        refused).
        """,
    )

    @validate("gpu_quotas")
    def _valid_quotas(self, proposal):
        return _checked(proposal, quota.check, quota.InvalidQuota, "gpu_quotas: ")

    gpu_reservation_rules = Dict(
        config=True,
        help="""
        Who may book GPUs for a window on the reservations page (``/hub/devdock/reservations``), by JupyterHub
        group and by default: ``{"groups": {"instructors": {"gpus": 8, "hours": 4}}, "default": {"gpus": 1,
        "hours": 2, "approval": True, "days_ahead": 7}}`` (at most ``gpus`` GPUs in one booking, ``hours`` long,
        ``days_ahead`` days ahead, 28 by default; ``open`` bookings at once, 3 by default; ``approval``: bookings
        wait for an admin). A booking starts at least ``cull_warning`` ahead. A user's groups'
        most generous rule applies, else the default. Admins always may book, for anyone, without approval.
        Empty (the default): only admins book. During a booking's window its GPUs are kept for the members of
        its group; servers of others that would hold them at its start end then, warned as for any time limit.
        Bookings are kept in the accounting database (``accounting_url``); a Swarm has none (its scheduler
        picks the GPUs).
        """,
    )

    @validate("gpu_reservation_rules")
    def _valid_reservation_rules(self, proposal):
        return _checked(proposal, reservation.check_rules, reservation.InvalidRules, "gpu_reservation_rules: ")

    gpu_reservation_timezone = Unicode(
        "",
        config=True,
        help="""
        The time zone GPU bookings are entered and shown in (an IANA name, ``Europe/Berlin``). Empty (the
        default): the hub's ``TZ``, else UTC.
        """,
    )

    @validate("gpu_reservation_timezone")
    def _valid_reservation_timezone(self, proposal):
        return _checked(proposal, reservation.zone, reservation.InvalidRules)

    #: UUIDs of the GPUs this server holds (state; empty when stopped).
    gpu_ids = List(Unicode()).tag(state="run")
    #: When this server's start joined the line for GPUs (epoch seconds; 0: not in line). Kept in the hub's
    #: database while it waits, so that a restarted hub gives the start its place back (queue_restore.py): a
    #: restarting hub's JupyterHub clears the state of a start it finds gone, so this is a "server" field, cleared
    #: when the start leaves the line (its turn, its longest wait, or its user cancelling: ``forget_place_in_line``).
    gpu_queue_since = Float(0).tag(state="server")

    def run_pre_spawn_hook(self):
        # JupyterHub reads start_timeout before start() runs: a start that may wait in line gets the longest wait
        # on top of the usual time, so that a queued start is not ended as a slow one.
        if not hasattr(self, "_usual_start_timeout"):
            self._usual_start_timeout = self.start_timeout
        extra = self.gpu_queue_max_wait if self._may_wait_in_line() else 0
        self.start_timeout = self._usual_start_timeout + extra
        return super().run_pre_spawn_hook()

    def _may_wait_in_line(self, profile: Profile | None = None) -> bool:
        if not (self.gpu_queue and self.devdock_hub.gpu_line):
            return False
        if profile is None:
            try:
                profile, _ = validate_user_options(self.user_options, self._profiles(), self._groups())
            except InvalidOptions:
                return False  # start() refuses it with the reason
        return bool(profile.gpus)

    async def allocate_gpus(self, profile: Profile) -> list[gpus.GPU]:
        """The GPUs ``profile`` asks for, from the hub's allocator (at most ``gpu_max_per_user`` per person),
        waiting in line for them when they are taken and ``gpu_queue`` is on."""
        self._over_quota = False
        per_owner = self._quota_cap(profile) if profile.gpus and self.gpu_quotas else self.gpu_max_per_user
        wait = None
        if self._may_wait_in_line(profile):
            wait = Wait(self.gpu_queue_since or time.time(), self.gpu_queue_max_wait, self._tell_line,
                        last=self._over_quota)  # fmt: skip
        self._line_told = None
        max_age = culler.rule_for(self.cull_policy(), profile.slug).max_age
        try:
            allotted = await self.devdock_hub.allocate_gpus(self.server_key, profile, per_owner, max_age, wait)
        except asyncio.CancelledError:
            # By the user leaving the line (JupyterHub then stops the server: the place goes with its state) or by
            # the hub's shutdown (the place stays in the database for the next hub).
            if self._line_told is not None:
                self._line_told = None
                self.devdock_hub.starting += 1
                self._cancelled_in_line = True
                self.log.info(
                    "devdock: %s is out of the line for GPUs: its start was cancelled (its user, an admin, a hub stop)",
                    self._log_name,
                )
                # Nothing runs: without a server JupyterHub's spawn page does not take the cancelled start for a
                # ready one (and send its user into a redirect loop) while the stop that follows is under way.
                # Written now: the request that started it rolls the hub's session back when it ends cancelled.
                self.server = None
                self._save_state_now()
            raise
        except web.HTTPError:
            self._left_line()
            raise
        if self._left_line():
            waited = time.time() - wait.since
            # The run starts now, not when the start joined the line: the time limits count from here (JupyterHub
            # set ``started`` before start() ran; the culler, the home page and the server read it).
            if getattr(self, "orm_spawner", None) is not None:
                self.orm_spawner.started = utc_now().replace(tzinfo=None)
                self._save_state_now()
            self._emit(9, f"Your turn: the GPUs are yours after {wait_words(waited).removeprefix('about ')} in line")
            self.log.info("devdock: %s leaves the line for GPUs after %.0f s", self._log_name, waited)
        self.gpu_ids = [g.uuid for g in allotted]
        return allotted

    def gpu_quota(self) -> tuple[quota.Rule | None, float]:
        """The quota rule of this server's user and the GPU-seconds they used in its period (None: no quota)."""
        try:
            rule = quota.rule_for(self.gpu_quotas, self.user.name, self._groups())
        except quota.InvalidQuota as e:
            raise web.HTTPError(500, f"devdock's gpu_quotas is misconfigured: {e}") from e
        if rule is None or rule.gpu_hours is None:
            return rule, 0.0
        ledger = self.devdock_hub.ledger
        if ledger is None:
            self.log.error("devdock: gpu_quotas needs the accounting database (accounting_url is off or broken)")
            return rule, 0.0
        now = utc_now()
        return rule, ledger.used_gpu_seconds(self.user.name, quota.period_start(rule.period, now), now)

    def _quota_cap(self, profile: Profile) -> int:
        """Refuse a start past the user's GPU-hours (HTTP 403 with a sentence); the GPUs-at-once cap to apply."""
        rule, used = self.gpu_quota()
        if rule is None:
            return self.gpu_max_per_user
        problem = quota.refusal(rule, used, 1, utc_now())
        self._over_quota = bool(problem) and self.gpu_quota_exceeded == "wait" and self._may_wait_in_line(profile)
        if self._over_quota:
            self.log.info("devdock: %s is past its GPU quota (%s): it waits behind starts within quota",
                          self._log_name, rule.source)  # fmt: skip
            self._emit(7, "You have used your GPU-hours of this period: your start waits behind everyone within "
                          "their quota, and starts when nobody within quota waits for these GPUs.")  # fmt: skip
        elif problem:
            self.log.info("devdock: %s refused for the GPU quota (%s)", self._log_name, rule.source)
            raise web.HTTPError(403, problem)
        caps = [c for c in (self.gpu_max_per_user, rule.gpus_at_once) if c]
        return min(caps) if caps else 0

    def _tell_line(self, place: int, in_line: int, estimate: float | None) -> None:
        """The spawn page's words for a start in line (said again only when they change)."""
        if self._line_told is None:
            # Joined: the place is kept in the hub's database; a waiting start is not "starting" (it uses nothing).
            self.gpu_queue_since = self.gpu_queue_since or time.time()
            self._save_state_now()
            self.devdock_hub.starting -= 1
            self.log.info("devdock: %s waits in line for GPUs (%s of %d)", self._log_name, ordinal(place), in_line)
        told = (place, in_line, None if estimate is None else round(estimate / 60))
        if told != self._line_told:
            self._line_told = told
            others = f", {in_line} waiting" if in_line > 1 else ""
            # Without history the estimate is the servers' time limit: a bound, said as one.
            waiter = self.devdock_hub.gpu_queue.waiter(self.server_key)
            bound = waiter is not None and self.devdock_hub.gpu_queue.usual_hold(waiter.line) is None
            if estimate is None:
                when = f": {wait_words(None)}"
            else:
                when = f" {'at the latest ' if bound else ''}in {wait_words(estimate)}"
            self._emit(
                8,
                f"All GPUs of this kind are in use: you are {ordinal(place)} in line{others}. Your turn{when}. Your "
                "server starts by itself then: keep this page open or come back later; Stop Server leaves the line.",
            )

    @property
    def line_place(self) -> str:
        """``"1st of 3"`` while this server's start waits in line for GPUs, "" otherwise (the home page says it)."""
        queue = self.devdock_hub.gpu_queue
        waiter = queue.waiter(self.server_key)
        if waiter is None:
            return ""
        return f"{ordinal(queue.position(self.server_key))} of {len(queue.line(waiter.line))}"

    def move_to_front_of_line(self) -> None:
        """An admin puts this waiting start first in its line (kept across a hub restart too)."""
        self.gpu_queue_since = self.devdock_hub.gpu_queue.to_front(self.server_key)
        self._save_state_now()
        self.devdock_hub.wake_line()

    def forget_place_in_line(self) -> None:
        """At ``clear_state``: a start of this hub process that was cancelled in line (its user, or an admin, took
        it out) does not come back after a restart. (A restarted hub also clears the state of the starts it finds
        gone, with a fresh spawner: their places stay, for queue_restore.py.)"""
        if getattr(self, "_cancelled_in_line", False):
            self._cancelled_in_line = False
            self.gpu_queue_since = 0

    def _left_line(self) -> bool:
        """After the wait (if any): the place is no longer kept; True if this start waited."""
        if self._line_told is None:
            return False
        self._line_told = None
        self.devdock_hub.starting += 1
        self.gpu_queue_since = 0
        self._save_state_now()
        return True

    def _save_state_now(self) -> None:
        """Write this server's state to the hub's database now (JupyterHub writes it only after a start)."""
        orm_spawner, db = getattr(self, "orm_spawner", None), getattr(self.user, "db", None)
        if orm_spawner is not None and db is not None:
            orm_spawner.state = self.get_state()
            db.commit()

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

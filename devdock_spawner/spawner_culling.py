"""Idle culling, the server's side: its limits, what it says about its activity, and why it last stopped (a mixin).

The culler itself is a hub-managed service (:mod:`devdock_spawner.culler`); this part hands each server the limits
of its profile (so that the server can warn its user), asks a running server about its activity (the admin page),
and keeps the culler's reason for the home page.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tornado import web
from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from traitlets import Dict, Int
from traitlets.config import LoggingConfigurable

from . import culler

#: The most the hub reads of a server's answer about its activity (devdock's own is under 2 KiB): the answer comes
#: from the user's own server, which says whatever its user makes it say, as big or as slow as they like.
STATUS_MAX_BYTES = 16 * 1024
#: Seconds the hub waits for that answer, connection included.
STATUS_TIMEOUT = 3
#: How far a server's clock may be ahead of the hub's before its times count as invented.
CLOCK_SKEW = timedelta(seconds=60)
#: What a kind of activity may be called on the admin page (devdock's own names and jupyter_server's are short words).
_SOURCE = re.compile(r"[\w .()/+-]{1,40}")


@dataclass(frozen=True)
class Activity:
    """What a running server says about its activity, checked: ``idle_seconds`` None when it said nothing usable."""

    idle_seconds: float | None = None
    #: the last kind of activity ("desktop input", "SSH", ...); "" when not said or not plausible
    source: str = ""


UNKNOWN = Activity()


def read_activity(body: bytes, now: datetime, started: datetime | None) -> Activity:
    """The activity in ``body`` (``api/devdock/status``'s JSON), believed only where it can be true.

    The last activity must be a time with its zone, not after ``now`` (beyond ``CLOCK_SKEW``) and not before the
    server's start (``started``): anything else, and anything that is not the expected JSON, is unknown.
    """
    try:
        status = json.loads(body)
    except (ValueError, RecursionError):
        return UNKNOWN
    if not isinstance(status, dict):
        return UNKNOWN
    last, source = status.get("last_activity"), status.get("last_activity_source")
    source = source if isinstance(source, str) and _SOURCE.fullmatch(source) else ""
    if not isinstance(last, str) or len(last) > 64:
        return UNKNOWN
    try:
        when = datetime.fromisoformat(last)
    except ValueError:
        return UNKNOWN
    if when.tzinfo is None:
        return UNKNOWN
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)  # JupyterHub's database keeps UTC without its zone
    if when > now + CLOCK_SKEW or (started is not None and when < started - CLOCK_SKEW):
        return UNKNOWN
    return Activity(max(0.0, (now - when).total_seconds()), source)


class CullingMixin(LoggingConfigurable):
    """Idle-culling settings and what a server reports about its activity."""

    # --- idle culling ------------------------------------------------------------------------

    cull_idle_timeout = Int(
        culler.IDLE_TIMEOUT,
        config=True,
        help="""
        Seconds without activity after which the idle culler (the ``devdock-culler`` service) stops a server that
        holds no GPU. A profile's ``idle_timeout`` wins. What counts as activity: JupyterLab, terminals and
        kernels, SSH sessions, and keyboard or pointer input on the desktop (an open desktop tab alone does not).
        0: never. Default: 28800 (8 hours).
        """,
    )

    cull_gpu_idle_timeout = Int(
        culler.GPU_IDLE_TIMEOUT,
        config=True,
        help="""
        The same for servers whose profile holds GPUs, so that scarce GPUs are given back first. A profile's
        ``idle_timeout`` wins. Default: 7200 (2 hours).
        """,
    )

    cull_gpu_contention_idle_timeout = Int(
        culler.GPU_CONTENTION_IDLE_TIMEOUT,
        config=True,
        help="""
        While starts wait in line for the kind of GPU a server holds (``gpu_queue``), the server is stopped after
        this many seconds without activity, if its own limit is longer: a forgotten tab does not hold a GPU that
        someone waits for. 0: no shorter limit. Default: 1800 (30 minutes).
        """,
    )

    cull_max_age = Int(
        0,
        config=True,
        help="""
        Seconds a server without GPUs may run at most, however busy. A profile's ``max_age`` wins. 0 (default):
        no limit.
        """,
    )

    cull_gpu_max_age = Int(
        culler.GPU_MAX_AGE,
        config=True,
        help="""
        Seconds a server holding GPUs may run at most, however busy (a fair share, not a lease for ever). A
        profile's ``max_age`` wins. 0: no limit. Default: 259200 (3 days).
        """,
    )

    cull_warning = Int(
        600,
        config=True,
        help="""
        Seconds before an idle stop (or the maximum age) that the user is warned, on the desktop and in
        JupyterLab; any use cancels an idle stop. Default: 600 (10 minutes).
        """,
    )

    cull_max_age_extension = Int(
        86400,
        config=True,
        help="""
        Seconds a user adds to their running server's maximum age with the home page's "Extend" button, while
        nobody waits in line for its kind of GPU; up to ``cull_max_age_extension_cap`` in all per run. 0: no
        extensions. Default: 86400 (a day).
        """,
    )

    cull_max_age_extension_cap = Int(
        3 * 86400,
        config=True,
        help="The most a run's maximum age may be extended in all, in seconds. Default: 259200 (3 days).",
    )

    #: Seconds this run's maximum age was extended by its user (state; 0 at each start).
    max_age_extension = Int(0).tag(state="run")

    def cull_policy(self) -> culler.Policy:
        """The culling policy of this hub's profiles (the culler service gets the same, see jupyterhub_config.py)."""
        return culler.policy_for(
            self._profiles(),
            self.cull_idle_timeout,
            self.cull_gpu_idle_timeout,
            self.cull_gpu_max_age,
            self.cull_max_age,
            self.cull_gpu_contention_idle_timeout,
        )

    #: The profile of the current (or last) start.
    _profile_slug = ""

    def get_env(self):
        env = super().get_env()
        env.update(self.cull_environment())
        return env

    @property
    def natural_end(self):
        """When the culler stops this running server for its age (naive UTC; its extensions count), None without
        a limit."""
        started = getattr(self.orm_spawner, "started", None)
        max_age = self._base_max_age()
        if not started or not max_age:
            return None
        return started.replace(tzinfo=None) + timedelta(seconds=max_age + self.max_age_extension)

    @property
    def reservation_deadline(self):
        """``(when, booking)`` when a GPU booking cuts this running server short (reservation.py), else None."""
        return self.devdock_hub.reservation_deadlines().get(self.server_key) if self.gpu_ids else None

    @property
    def end_time(self):
        """When the culler stops this running server at the latest (naive UTC): its time limit, or a GPU booking's
        start; None without either (the home page says it)."""
        ends = [e for e in (self.natural_end, (self.reservation_deadline or (None,))[0]) if e is not None]
        return min(ends) if ends else None

    def _base_max_age(self) -> int:
        profile = (self.user_options or {}).get("profile", "") if isinstance(self.user_options, dict) else ""
        return culler.rule_for(self.cull_policy(), profile).max_age

    @property
    def extension_refusal(self) -> str:
        """Why this running server's time cannot be extended now ("" if it can)."""
        cut = self.reservation_deadline
        if cut is not None:
            return (
                f"These GPUs are booked for {cut[1].whom} from {self.devdock_hub.local_words(cut[0])}: this server "
                "must end then, and its time cannot be extended."
            )
        if self.natural_end is None or not self.cull_max_age_extension:
            return "This server has no time limit to extend."
        if self.max_age_extension >= self.cull_max_age_extension_cap:
            return (
                f"This server's time was extended by the most this hub allows "
                f"({culler.duration(self.cull_max_age_extension_cap)})."
            )
        waiting = self.devdock_hub.gpu_queue.waiting()
        kinds = {w.line.partition(":")[0] for w in waiting}
        allocator = self.devdock_hub.allocator
        held = {allocator.by_uuid[u].kind for u in self.gpu_ids if allocator and u in allocator.by_uuid}
        if kinds & held:
            return "Others wait in line for this kind of GPU: a server's time cannot be extended while they wait."
        return ""

    async def extend_time(self) -> None:
        """Add ``cull_max_age_extension`` (up to the cap) to this run's maximum age; HTTP 409 with why not."""
        refusal = self.extension_refusal
        if refusal:
            raise web.HTTPError(409, refusal)
        self.max_age_extension = min(
            self.cull_max_age_extension_cap, self.max_age_extension + self.cull_max_age_extension
        )
        self._save_state_now()
        await self.write_time_limit()
        self.log.info("devdock: %s extended by %s s, until %s UTC", self._log_name, self.max_age_extension,
                      self.end_time)  # fmt: skip

    async def write_time_limit(self) -> bool:
        """Tell the running server its maximum age when it is not its profile's (extended, or cut short by a GPU
        booking), or that it is its own again: its warnings (devdock_ext, devdock-end-time) read it from root-owned
        files its user cannot write. True when the server has it."""
        started, end = getattr(self.orm_spawner, "started", None), self.end_time
        if not started or end is None:
            script = "/bin/rm -f /run/devdock/cull-max-age /run/devdock/cull-why"
        else:
            # Rounded up to the millisecond: the server's clock then never shows a second (or minute) early.
            max_age = math.ceil(max(0.0, (end - started.replace(tzinfo=None)).total_seconds()) * 1000) / 1000
            cut = self.reservation_deadline
            # Why, for the warning, when a booking cut it short (names from the hub's own database; quoted).
            why = f"its GPUs are booked for {cut[1].whom} from {self.devdock_hub.local_words(cut[0])}" if cut else ""
            # Written beside and renamed, so that a reader never sees half a file.
            keep_why = (
                f"printf '%s' {shlex.quote(why)} > /run/devdock/.why && /bin/mv /run/devdock/.why /run/devdock/cull-why"
                if why
                else "/bin/rm -f /run/devdock/cull-why"
            )
            script = (
                f"/bin/mkdir -p /run/devdock && echo {max_age:.3f} > /run/devdock/.max && {keep_why} && "
                "/bin/mv /run/devdock/.max /run/devdock/cull-max-age"
            )
        try:
            run = await self.docker("exec_create", self.container_id, ["/bin/sh", "-c", script], user="0")
            await self.docker("exec_start", run["Id"])
            result = await self.docker("exec_inspect", run["Id"])
        except Exception as e:  # noqa: BLE001 - the culler has the new limit; only the server's warning lags
            self.log.warning("devdock: could not tell %s its new time limit: %s", self._log_name, e)
            return False
        if result.get("ExitCode"):
            self.log.warning("devdock: could not tell %s its new time limit (exit %s)", self._log_name,
                             result.get("ExitCode"))  # fmt: skip
            return False
        return True

    def cull_environment(self) -> dict:
        """The limits of this server's profile, so that the server can warn its user before the stop."""
        rule = culler.rule_for(self.cull_policy(), self._profile_slug)
        started = getattr(self.orm_spawner, "started", None)
        return {
            "DEVDOCK_CULL_IDLE_TIMEOUT": str(rule.idle_timeout),
            "DEVDOCK_CULL_MAX_AGE": str(rule.max_age),
            # the hub's start of this run, which the culler counts the age from (the server process starts later)
            "DEVDOCK_CULL_STARTED": started.replace(tzinfo=UTC).isoformat() if started else "",
            "DEVDOCK_CULL_WARNING": str(self.cull_warning),
        }

    async def reported_activity(self) -> Activity | None:
        """What the running server says about its activity (``api/devdock/status`` of devdock's server extension),
        checked by :func:`read_activity`: the idle time and the last kind of activity. None when it is not running.

        The answer is the user's server's to make: read with a client of its own that stops at
        ``STATUS_MAX_BYTES`` and ``STATUS_TIMEOUT`` (JupyterHub's default client may be curl's, which has no body
        limit), so that neither a huge nor an endless answer holds the hub's event loop.
        """
        server = self.server
        if not (self.active and self.ready and server is not None and self.api_token):
            return None
        url = f"http://{server.ip}:{server.port}{server.base_url}api/devdock/status"
        request = HTTPRequest(
            url,
            headers={"Authorization": f"token {self.api_token}"},
            connect_timeout=STATUS_TIMEOUT,
            request_timeout=STATUS_TIMEOUT,
            follow_redirects=False,
            decompress_response=False,
        )
        client = SimpleAsyncHTTPClient(force_instance=True, max_body_size=STATUS_MAX_BYTES)
        try:
            response = await client.fetch(request)
        except Exception as e:  # noqa: BLE001 - an image without devdock's extension, a server starting up, junk
            self.log.debug("No activity status from %s: %s", self._log_name, e)
            return UNKNOWN
        finally:
            client.close()
        started = self.orm_spawner.started if self.orm_spawner is not None else None
        return read_activity(response.body, datetime.now(UTC), started)

    #: Why the server last stopped when it was not its user's doing (the culler's reason), with the time: the
    #: home page tells the user. Kept in the state while stopped; cleared by the next start.
    stop_reason = Dict().tag(state="server")

"""Resources: what one server may take of the shared box, and what it takes (a mixin).

Every server has a memory limit, a CPU limit, bounded ``/tmp``, rotated logs and a pids limit by default, and is
the first the host's OOM killer picks. What each one uses (memory, CPU, its home's size) and the out-of-memory
kills the kernel made inside it are read from the engine by the hub-wide object (:mod:`devdock_spawner.hubwide`),
for the admin page, the user's home page and ``/hub/metrics`` (:mod:`devdock_spawner.usage` parses); the settings
of that reading and of the hub's disk check are here, with the limits.
"""

from __future__ import annotations

import os
from datetime import datetime

from traitlets import Int, Unicode, default
from traitlets.config import LoggingConfigurable

from . import usage


class ResourcesMixin(LoggingConfigurable):
    """Limits per server; what this server uses, as the hub object last read it."""

    # --- resources ---------------------------------------------------------------------------

    @default("mem_limit")
    def _default_mem_limit(self):
        """8 GiB: every server has a memory limit, so one user's notebook cannot bring the host's OOM killer onto
        the hub or other users. A profile's ``overrides.mem_limit`` wins; ``None`` means no limit."""
        return "8G"

    @default("cpu_limit")
    def _default_cpu_limit(self):
        """Three quarters of the host's CPUs (at least one): one busy user cannot take the whole machine, and the
        hub always has CPU left. A profile's ``overrides.cpu_limit`` wins; ``None`` means no limit."""
        return max(1.0, round((os.cpu_count() or 1) * 0.75, 2))

    tmp_size = Unicode(
        "2g",
        config=True,
        help="""
        Size of the tmpfs on ``/tmp`` and ``/var/tmp`` (counted against the memory limit). They are the only
        places outside the home where a user can write, so the container's writable layer stays bounded on every
        storage driver. Example: ``"8g"``. Empty: no tmpfs (writes go to the container layer, unbounded).
        """,
    )

    log_max_size = Unicode(
        "10m",
        config=True,
        help="""
        Docker log rotation for servers (json-file driver): the size of one log file. Output floods (a ``print``
        loop in a kernel) cannot fill the host's disk. Empty: the engine's default. Default: ``"10m"``.
        """,
    )

    log_max_files = Int(3, config=True, help="How many rotated log files Docker keeps per server. Default: 3.")

    oom_score_adj = Int(
        500,
        config=True,
        help="""
        How readily the host's OOM killer picks users' servers (``-1000..1000``): when the host itself runs out of
        memory, it takes a user's server before the hub and the proxy (which stay at 0). Default: 500.
        """,
    )

    shm_size = Unicode(
        "512m",
        config=True,
        help="""
        Size of ``/dev/shm``. Docker's 64m default is too small for browsers and PyTorch data
        loaders running in the desktop. Example: ``"2g"``. Empty: Docker's default.
        """,
    )

    pids_limit = Int(
        4096,
        config=True,
        help="""
        Most processes (and threads) one container may run, so that a fork bomb in one desktop
        cannot exhaust the host. 0 means no limit. Default: 4096.
        """,
    )

    usage_interval = Int(
        30,
        config=True,
        help="""
        Seconds between readings of what each running server uses (memory, CPU, GPU use and health; its home's
        size every tenth reading), shown on the admin page and as ``devdock_server_*`` gauges on
        ``/hub/metrics``. 0: off.
        Default: 30.
        """,
    )

    hub_data_dir = Unicode(
        config=True,
        help="""
        The hub's data folder (its database, cookie secret and SSH keys). When less than ``hub_min_free_mb`` is
        free there, servers do not start (a full disk would make the hub's database writes fail), and the hub's
        log and admin page say so. Default: the hub's working folder (``DEVDOCK_DATA_DIR`` in devdock's config).
        """,
    )

    @default("hub_data_dir")
    def _default_hub_data_dir(self):
        return os.getcwd()

    hub_min_free_mb = Int(
        100,
        config=True,
        help="""
        Free space (MiB) the hub's data folder must keep. Below it, servers do not start, the hub's log and admin
        page say the disk is full, and the hub frees its reserve (``hub_disk_reserve_mb``) so that its database can
        still be written (sign-ins, stops) until an admin frees space. 0: no check. Default: 100.
        """,
    )

    hub_disk_reserve_mb = Int(
        64,
        config=True,
        help="""
        Space (MiB) the hub sets aside in its data folder (``.devdock-disk-reserve``) while the disk has room, and
        gives back when the disk fills up: the database never meets a full disk unprepared. 0: no reserve.
        Default: 64.
        """,
    )

    @property
    def last_oom(self) -> datetime | None:
        """When the kernel last killed a process of this server for memory (since the hub started)."""
        return self.devdock_hub.oom.get(self.server_key)

    @property
    def memory_limit_text(self) -> str:
        return usage.human_bytes(int(self.mem_limit)) if self.mem_limit else "none"

    @property
    def usage_now(self) -> usage.Usage | None:
        return self.devdock_hub.usage.get(self.server_key)

"""Resources: what one server may take of the shared box, and what it takes (a mixin).

Every server has a memory limit, a CPU limit, bounded ``/tmp``, rotated logs and a pids limit by default, and is
the first the host's OOM killer picks. What each one uses (memory, CPU, its home's size) and the out-of-memory
kills the kernel made inside it are read from the engine, hub-wide, for the admin page, the user's home page and
``/hub/metrics`` (:mod:`devdock_spawner.usage` parses).
"""

from __future__ import annotations

import os

from traitlets import Int, Unicode, default
from traitlets.config import LoggingConfigurable


class ResourcesMixin(LoggingConfigurable):
    """Limits per server, and the hub-wide reading of what servers use."""

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

"""devdock's small Jupyter server extension, inside the user's container.

It makes SSH sessions count as activity: jupyterhub-singleuser reports the server's last activity to
the Hub (which the idle culler reads), but it only knows about browser traffic, kernels and
terminals. Every ``interval`` seconds this extension looks for the user's live SSH sessions in
``/proc`` and, if there is one, records "now" in the server's ``last_activity_times`` — the same
table jupyter_server's own handlers write to — so the next activity report carries it.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from tornado.ioloop import PeriodicCallback


def ssh_sessions(proc: str = "/proc") -> int:
    """Number of live SSH sessions of this user: sshd children titled ``sshd: <user>@<tty|notty>``."""
    uid = os.getuid()
    count = 0
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"{proc}/{pid}").st_uid != uid:
                continue
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if title.startswith("sshd: ") and "@" in title:
            count += 1
    return count


def _jupyter_server_extension_points():
    return [{"module": "devdock_ext"}]


def _load_jupyter_server_extension(serverapp):
    settings = serverapp.web_app.settings
    interval = float(os.environ.get("DEVDOCK_SSH_ACTIVITY_INTERVAL", "30"))

    def check():
        if ssh_sessions():
            settings.setdefault("last_activity_times", {})["devdock-ssh"] = datetime.now(timezone.utc)

    PeriodicCallback(check, interval * 1000).start()
    serverapp.log.info("devdock: SSH sessions count as activity (checked every %ss)", interval)

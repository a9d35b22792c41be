"""devdock's small Jupyter server extension, inside the user's container.

It makes SSH sessions count as activity: jupyterhub-singleuser reports the server's last activity to
the Hub (which the idle culler reads), but it only knows about browser traffic, kernels and
terminals. Every ``interval`` seconds this extension looks for the user's live SSH sessions in
``/proc`` and, if there is one, records "now" in the server's ``last_activity_times`` — the same
table jupyter_server's own handlers write to — so the next activity report carries it.
"""

from __future__ import annotations

import json
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


def _secure_xsrf_cookie(settings: dict) -> bool:
    """Make the server's own ``_xsrf`` cookie Secure when the hub's cookies are (an https public URL).

    JupyterHub hands its ``cookie_options`` to single-user servers (``JUPYTERHUB_COOKIE_OPTIONS``) and applies
    them to the server's login cookie, but not to the ``_xsrf`` cookie, which tornado sets from
    ``xsrf_cookie_kwargs``; behind a TLS front end the server cannot tell https from the forwarded headers.
    """
    try:
        options = json.loads(os.environ.get("JUPYTERHUB_COOKIE_OPTIONS") or "{}")
    except ValueError:
        return False
    if options.get("secure") is True:
        settings.setdefault("xsrf_cookie_kwargs", {})["secure"] = True
        return True
    return False


def _load_jupyter_server_extension(serverapp):
    settings = serverapp.web_app.settings
    if _secure_xsrf_cookie(settings):
        serverapp.log.info("devdock: the _xsrf cookie is Secure, as the hub's cookies are")
    interval = float(os.environ.get("DEVDOCK_SSH_ACTIVITY_INTERVAL", "30"))

    def check():
        if ssh_sessions():
            settings.setdefault("last_activity_times", {})["devdock-ssh"] = datetime.now(timezone.utc)

    PeriodicCallback(check, interval * 1000).start()
    serverapp.log.info("devdock: SSH sessions count as activity (checked every %ss)", interval)

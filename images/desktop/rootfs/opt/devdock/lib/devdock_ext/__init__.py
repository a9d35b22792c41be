"""devdock's small Jupyter server extension, inside the user's container: honest activity, and a warning before
the idle culler stops the server.

jupyterhub-singleuser reports the server's last activity to the Hub (which the idle culler reads). It knows about
JupyterLab, kernels and terminals; this extension adds what it cannot see, in the server's own
``last_activity_times`` table (jupyter_server's place for extensions to register activity, combined with max()):

- **SSH sessions**: the user's live ``sshd: <user>@...`` processes;
- **desktop input**: the X server's own idle time (``xprintidle``, the MIT-SCREEN-SAVER extension), which only
  keyboard and pointer events reset. The desktop's websocket itself does not count (jupyter_server_config.py
  turns that off): noVNC's framebuffer requests are not a person.

It also tells the user when the server will be stopped for being idle (``api/devdock/status``, polled by the
devdock-notices JupyterLab plugin, and a desktop notification), from the limits the spawner hands over:
``DEVDOCK_CULL_IDLE_TIMEOUT``, ``DEVDOCK_CULL_MAX_AGE`` (or, once the user extended it or a GPU reservation cut it
short, ``/run/devdock/cull-max-age`` written by the hub), counted from ``DEVDOCK_CULL_STARTED`` (the hub's start of
the run), ``DEVDOCK_CULL_WARNING`` (seconds). When the home has a
size limit (``DEVDOCK_HOME_SIZE``, bytes) and is (nearly) full, the same status says so.
"""

from __future__ import annotations

import asyncio
import glob
import html
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

from tornado.ioloop import PeriodicCallback


def _now() -> datetime:
    return datetime.now(UTC)


def _seconds(name: str, default: float = 0) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def stop_time(
    last_activity: datetime, started: datetime, idle_timeout: float, max_age: float
) -> tuple[datetime, str] | None:
    """When the culler will stop this server, and why (``"idle"`` or ``"age"``); None: never.

    The culler's own rule (devdock_spawner/culler.py, ``decide``) stops a server once it has been inactive for
    ``idle_timeout`` seconds or has run for ``max_age``, 0 meaning no such limit; at a tie the age is named, as the
    culler names it. tests/unit/test_image_contract.py holds the two to the same answers.
    """
    candidates = []
    if idle_timeout:
        candidates.append((last_activity + timedelta(seconds=idle_timeout), "idle"))
    if max_age:
        candidates.append((started + timedelta(seconds=max_age), "age"))
    return min(candidates) if candidates else None


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


def _human(size: float) -> str:
    unit = "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"


def home_full_notice(home: str, limit: int) -> str:
    """A sentence when the size-limited home has less than 2% of its room left (``""`` otherwise)."""
    if not limit:
        return ""
    try:
        st = os.statvfs(home)
    except OSError:
        return ""
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    if free >= total / 50:
        return ""
    return (
        f"Your home is full: {_human(total - free)} of its {_human(total)} are used, so saving files fails with "
        "'No space left on device'. Your files are safe. Delete what you do not need (du -sh ~/* ~/.[!.]* | "
        "sort -h shows the biggest; pip's cache is in ~/.cache), or ask an admin for a larger home."
    )


def user_displays() -> list[str]:
    """X displays of this user's desktops (``:1``...), from the X servers' sockets."""
    displays = []
    for socket_path in sorted(glob.glob("/tmp/.X11-unix/X*")):
        try:
            if os.stat(socket_path).st_uid == os.getuid():
                displays.append(":" + socket_path.rsplit("X", 1)[1])
        except OSError:
            continue
    return displays


def _x_env(display: str) -> dict:
    return {**os.environ, "DISPLAY": display, "XAUTHORITY": os.path.expanduser("~/.Xauthority")}


async def desktop_idle_ms(display: str) -> int | None:
    """Milliseconds since the last keyboard or pointer event on ``display`` (None if it cannot be read)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "xprintidle", env=_x_env(display), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=5)
    except (TimeoutError, OSError):
        return None
    text = out.decode().strip()
    return int(text) if proc.returncode == 0 and text.isdigit() else None


def session_bus(display: str) -> str:
    """The D-Bus session bus of the desktop session on ``display`` (where its notification daemon listens)."""
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            if os.stat(environ).st_uid != os.getuid():
                continue
            with open(environ, "rb") as f:
                pairs = dict(p.split(b"=", 1) for p in f.read().split(b"\0") if b"=" in p)
        except OSError:
            continue
        if pairs.get(b"DISPLAY", b"").decode() == display and b"DBUS_SESSION_BUS_ADDRESS" in pairs:
            return pairs[b"DBUS_SESSION_BUS_ADDRESS"].decode()
    return ""


class IdleWatch:
    """The server's activity sources, and the cull warning derived from its limits."""

    def __init__(self, serverapp):
        self.app = serverapp
        self.settings = serverapp.web_app.settings
        self.idle_timeout = _seconds("DEVDOCK_CULL_IDLE_TIMEOUT")
        self.warning = _seconds("DEVDOCK_CULL_WARNING", 600)
        self.notified: dict[str, str] = {}  # display -> notification id
        self.warned_for: datetime | None = None

    #: Where the hub writes the run's maximum age when its user extends it (root-owned: the user cannot write it).
    EXTENDED = "/run/devdock/cull-max-age"

    @property
    def max_age(self) -> float:
        """The run's maximum age: the hub's extension when there is one, else the spawner's DEVDOCK_CULL_MAX_AGE."""
        try:
            with open(self.EXTENDED) as f:
                return float(f.read().strip())
        except (OSError, ValueError):
            return _seconds("DEVDOCK_CULL_MAX_AGE")

    #: Why the hub cut the run short, when a GPU booking did (root-owned, written by the hub with EXTENDED).
    CUT_SHORT = "/run/devdock/cull-why"

    @property
    def cut_short(self) -> str:
        try:
            with open(self.CUT_SHORT) as f:
                return f.read().strip()[:300]
        except OSError:
            return ""

    @property
    def started(self) -> datetime | None:
        """When the run started for the culler: the hub's start (DEVDOCK_CULL_STARTED), else this process's."""
        try:
            return datetime.fromisoformat(os.environ["DEVDOCK_CULL_STARTED"])
        except (KeyError, ValueError):
            return self.settings.get("started")

    def record(self, source: str, when: datetime) -> None:
        table = self.settings.setdefault("last_activity_times", {})
        if source not in table or table[source] < when:
            table[source] = when

    def check_ssh(self) -> None:
        if ssh_sessions():
            self.record("devdock-ssh", _now())

    async def check_desktop(self) -> None:
        for display in user_displays():
            idle = await desktop_idle_ms(display)
            if idle is not None:
                self.record("devdock-desktop", _now() - timedelta(milliseconds=idle))

    #: jupyter_server's names for its activity sources, and this extension's, in words for the admin page
    SOURCES = {
        "devdock-desktop": "desktop input",
        "devdock-ssh": "SSH",
        "api_last_activity": "JupyterLab",
        "terminal_last_activity": "terminal",
        "kernels": "kernels",
        "started": "start",
    }

    def sources(self) -> dict[str, datetime]:
        """The last time of each kind of activity (what ``web_app.last_activity()`` takes the maximum of)."""
        settings = self.settings
        found = {"started": settings.get("started")}
        for key, value in settings.items():
            if key.endswith("_last_activity") and isinstance(value, datetime):
                found[key] = value
        for key, value in (settings.get("last_activity_times") or {}).items():
            found[key] = value
        kernels = getattr(self.app, "kernel_manager", None)
        if kernels is not None and getattr(kernels, "last_kernel_activity", None):
            found["kernels"] = kernels.last_kernel_activity
        return {self.SOURCES.get(k, k): v for k, v in found.items() if isinstance(v, datetime)}

    def status(self) -> dict:
        """When the culler will stop this server, and what to tell the user (None: nothing to say)."""
        now = _now()
        last = self.app.web_app.last_activity()
        sources = self.sources()
        last_source = max(sources, key=sources.get) if sources else ""
        stop = stop_time(last, self.started or now, self.idle_timeout, self.max_age)
        base = {
            "last_activity": last.isoformat(),
            "last_activity_source": last_source,
            "sources": {k: v.isoformat() for k, v in sources.items()},
            # how often the JupyterLab plugin should ask: often enough to warn in time
            "poll_seconds": max(5, min(20, int(self.warning / 4) or 20)),
        }
        notices = []
        safe_mode = os.environ.get("DEVDOCK_SAFE_MODE")
        if safe_mode:
            notices.append(
                f"Your server could not start with your own Python packages ({safe_mode}), so it runs without them "
                "(~/.local is not used by JupyterLab now). Find the package that breaks it in a terminal "
                "(pip list --user; python -c 'import ...'), remove it with pip uninstall, then restart your server."
            )
        full = home_full_notice(os.path.expanduser("~"), int(_seconds("DEVDOCK_HOME_SIZE")))
        if full:
            notices.append(full)
        if notices:
            base["notice"] = " ".join(notices)
        # Until when it may run at the latest, whatever its activity: shown all the time (JupyterLab's top bar, the
        # desktop's panel through devdock-end-time, which counts the same way).
        ends = (self.started or now) + timedelta(seconds=self.max_age) if self.max_age else None
        base["ends_at"] = ends.isoformat() if ends else None
        base["ends_why"] = self.cut_short or ("its time limit" if ends else "")
        if stop is None:
            return {**base, "stops_at": None, "warning": None}
        stops_at, why = stop
        remaining = (stops_at - now).total_seconds()
        warning = None
        if remaining <= self.warning:
            minutes = max(1, round(remaining / 60))
            when = f"in about {minutes} minute{'s' if minutes != 1 else ''}" if remaining > 30 else "in a moment"
            if why == "idle":
                warning = (
                    f"This server will be stopped {when} because nobody has used it (no keyboard, pointer, notebook, "
                    "terminal or SSH use). Do anything in it to keep it running; your files in your home stay."
                )
            elif self.cut_short:
                warning = (
                    f"This server will be stopped {when}: {self.cut_short}. Save your work; your files in your home "
                    "stay, and you can start it again after the booking."
                )
            else:
                warning = (
                    f"This server reaches its maximum running time and will be stopped {when}. Save your work; your "
                    "files in your home stay, and you can start it again."
                )
        return {**base, "stops_at": stops_at.isoformat(), "warning": warning, "stop_why": why}

    async def notify_desktop(self) -> None:
        """Show the warning on every desktop of this user while it holds; take it away when it no longer does."""
        status = self.status()
        warning = status["warning"]
        title = "Your server is idle" if status.get("stop_why") == "idle" else "Your server stops soon"
        for display in user_displays():
            bus = session_bus(display)
            if not bus:
                continue
            env = {**_x_env(display), "DBUS_SESSION_BUS_ADDRESS": bus}
            if warning and display not in self.notified:
                result = await asyncio.to_thread(
                    subprocess.run,
                    ["notify-send", "--print-id", "--urgency=critical", "--expire-time=0",
                     title, html.escape(warning, quote=False)],  # the body is markup for the notification daemon
                    env=env, capture_output=True, text=True, timeout=10,
                )  # fmt: skip
                if result.returncode == 0:
                    self.notified[display] = result.stdout.strip() or "0"
                    self.app.log.info("devdock: idle warning shown on desktop %s", display)
            elif not warning and display in self.notified:
                await asyncio.to_thread(
                    subprocess.run,
                    ["gdbus", "call", "--session", "--dest", "org.freedesktop.Notifications", "--object-path",
                     "/org/freedesktop/Notifications", "--method", "org.freedesktop.Notifications.CloseNotification",
                     self.notified.pop(display)],
                    env=env, capture_output=True, timeout=10,
                )  # fmt: skip
                self.app.log.info("devdock: idle warning withdrawn from desktop %s", display)

    async def tick(self) -> None:
        try:
            self.check_ssh()
            await self.check_desktop()
            await self.notify_desktop()
        except Exception as e:  # noqa: BLE001 - activity tracking must never take the server down
            self.app.log.warning("devdock: activity check failed: %s", e)


def _status_handler(watch: IdleWatch):
    from jupyter_server.base.handlers import APIHandler
    from tornado import web

    class StatusHandler(APIHandler):
        # Asking when the server stops is not using it: the JupyterLab plugin polls this.
        _track_activity = False

        @web.authenticated
        def get(self):
            self.finish(json.dumps(watch.status()))

    return StatusHandler


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
    interval = _seconds("DEVDOCK_SSH_ACTIVITY_INTERVAL", 30)
    watch = IdleWatch(serverapp)
    PeriodicCallback(watch.tick, interval * 1000).start()
    base = settings.get("base_url", "/")
    from .desktop import handlers as desktop_handlers  # jupyter_server's handlers: imported inside the server

    serverapp.web_app.add_handlers(
        ".*$", [(f"{base.rstrip('/')}/api/devdock/status", _status_handler(watch)), *desktop_handlers(base)]
    )
    serverapp.log.info(
        "devdock: SSH sessions and desktop input count as activity (checked every %ss); idle limit %ss, max age %ss",
        interval, watch.idle_timeout or "none", watch.max_age or "none",
    )  # fmt: skip

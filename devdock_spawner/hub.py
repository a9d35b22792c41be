"""devdock's pages inside the Hub: SSH keys and access lines for users, an overview for admins.

Enable them in ``jupyterhub_config.py``::

    from devdock_spawner import hub as devdock_hub
    devdock_hub.configure(c)

which adds the handlers (``/hub/ssh``, ``/hub/devdock/admin``) and devdock's templates (a navigation
link on every hub page) to the Hub. Both pages run inside the Hub, behind its login and its XSRF checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aiohttp.connector
import aiohttp.resolver
import docker
import jupyterhub.apihandlers.users
import jupyterhub.log
import jupyterhub.user
from jupyterhub import orm
from jupyterhub.apihandlers import APIHandler
from jupyterhub.handlers import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import httputil, web

from . import accounting, culler, hubwide, metrics
from .gpu import WHOLE, engine_gpu_support
from .gpu_queue import wait_words
from .guarantees import missing_guarantees
from .hub_reservations import ReservationsHandler
from .hubconfig import SINGLE_ORIGIN_WARNING, configured_profiles, culling_policy
from .spawner import DevDockSpawner
from .spawner_ssh import SSH_CONTAINER_PORT
from .ssh import InvalidKey, UnusableUsername, fingerprint, key_index, known_hosts_line, parse_keys
from .usage import human_bytes

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def _devdock_spawners(user):
    """The user's spawners that are DevDockSpawners (the default server first)."""

    names = sorted(user.orm_spawners, key=lambda n: (n != "", n))
    spawners = [user.spawners[name] for name in names]
    return [s for s in spawners if isinstance(s, DevDockSpawner)]


def _server_rows(user) -> list[dict]:
    rows = []
    for spawner in _devdock_spawners(user):
        rows.append(
            {
                "user": user.name,
                "server": spawner.name or "(default)",
                "running": bool(spawner.active and spawner.ready),
                "pending": spawner.pending or "",
                "container": spawner.object_name,
                "node": getattr(spawner, "location", ""),
                "image": spawner.image,
                "ssh_port": spawner.ssh_port or "",
                "ssh_command": spawner.ssh_command if spawner.ssh_via_port and spawner.ssh_port else "",
                "host_key_fingerprint": fingerprint(spawner.ssh_host_key),
                "known_hosts": known_hosts_line(spawner.ssh_endpoint, spawner.ssh_host_key),
                "gateway_config": spawner.ssh_gateway_config() if spawner.ssh_via_gateway else "",
                "gateway_alias": spawner.ssh_gateway_alias if spawner.ssh_via_gateway else "",
                "gateway_known_hosts": (
                    known_hosts_line((spawner.ssh_gateway_alias, 22), spawner.ssh_host_key)
                    if spawner.ssh_via_gateway
                    else ""
                ),
                "gpus": ", ".join(getattr(spawner, "gpu_ids", []) or []),
            }
        )
    return rows


#: Largest form ``/hub/ssh`` reads: room for MAX_KEYS long RSA keys, far below what costs the hub time to parse.
MAX_SSH_FORM = 64 * 1024


@web.stream_request_body
class SSHPageHandler(BaseHandler):
    """``/hub/ssh``: the user's SSH command lines, their servers' host keys, and their public keys.

    The body of a POST is streamed and refused past ``MAX_SSH_FORM`` before anything parses it (tornado would
    otherwise read and decode up to its 100 MB limit on the hub's event loop). The XSRF check, which needs
    the form's ``_xsrf`` field, runs once the body is in.
    """

    _form_ready = False

    _too_big = False

    async def prepare(self):
        self._chunks = []
        if self.request.method == "POST":
            length = self.request.headers.get("Content-Length", "")
            # Too big (or of unknown size): the body is read and dropped, never kept or parsed, so that the proxy in
            # front gets a clean 413 instead of a connection closed under its feet.
            self._too_big = not length.isdigit() or int(length) > MAX_SSH_FORM
        return await super().prepare()

    def data_received(self, chunk: bytes):
        if not self._too_big:
            self._chunks.append(chunk)

    def check_xsrf_cookie(self):
        if self.request.method == "POST" and not self._form_ready:
            return None  # checked in post(), as soon as the form's _xsrf field can be read
        return super().check_xsrf_cookie()

    def _read_form(self) -> None:
        self.request.body = b"".join(self._chunks)
        httputil.parse_body_arguments(
            self.request.headers.get("Content-Type", ""),
            self.request.body,
            self.request.body_arguments,
            self.request.files,
            self.request.headers,
        )
        for name, values in self.request.body_arguments.items():
            self.request.arguments.setdefault(name, []).extend(values)
        self._form_ready = True
        self.check_xsrf_cookie()

    def _store(self, user):
        return user.spawners[""].key_store()

    async def _render(self, user, keys_text: str, error: str = "", saved: bool = False, restart_needed=()):
        servers = _server_rows(user)
        gateway = {}
        first = _devdock_spawners(user)[:1]
        if first and any(s["gateway_config"] for s in servers):
            spawner = first[0]
            endpoint = (spawner.ssh_gateway_host, spawner.ssh_gateway_port)
            gateway = {
                "config": spawner.ssh_gateway_block(),
                "fingerprint": fingerprint(spawner.ssh_gateway_host_key()),
                "known_hosts": known_hosts_line(endpoint, spawner.ssh_gateway_host_key()),
            }
        html = await self.render_template(
            "devdock_ssh.html",
            keys_text=keys_text,
            error=error,
            saved=saved,
            restart_needed=list(restart_needed),
            servers=servers,
            gateway=gateway,
        )
        self.finish(html)

    @web.authenticated
    async def get(self):
        user = self.current_user
        try:
            keys = self._store(user).load(user.name)
        except UnusableUsername as e:
            self.set_status(400)
            return await self._render(user, "", error=str(e))
        await self._render(user, "".join(k.line() + "\n" for k in keys))

    @web.authenticated
    async def post(self):
        if self._too_big:
            raise web.HTTPError(413, f"The SSH keys form is limited to {MAX_SSH_FORM // 1024} KiB; nothing was saved")
        self._read_form()
        user = self.current_user
        text = self.get_body_argument("keys", "")
        try:
            keys = parse_keys(text)
            self._store(user).save(user.name, keys)
        except (InvalidKey, UnusableUsername) as e:
            # Nothing is saved: the stored keys stay as they were, the form keeps what was typed.
            self.set_status(400)
            return await self._render(user, text, error=str(e))
        not_yet = []
        for spawner in _devdock_spawners(user):
            if spawner.active and spawner.ready and await spawner.push_ssh_keys(keys) is False:
                not_yet.append(spawner.name or "(default)")
        await self._render(user, "".join(k.line() + "\n" for k in keys), saved=True, restart_needed=not_yet)


class AdminOverviewHandler(BaseHandler):
    """``/hub/devdock/admin``: every server with its container, SSH port and GPUs (admins only)."""

    @web.authenticated
    @needs_scope("admin-ui")
    async def get(self):
        # The admin's own spawner object makes devdock's hub-wide object if no server has yet (a hub just started).
        _devdock_spawners(self.current_user) or self.current_user.spawners[""]
        hub = hubwide.current()
        if hub is not None:
            await hub.start()  # what runs without the database knowing it, found once per hub
        rows, spawners = [], []
        for orm_user in sorted(self.db.query(self.orm_user_class()), key=lambda u: u.name):
            user = self.users[orm_user]
            rows.extend(_server_rows(user))
            spawners.extend(_devdock_spawners(user))
        activities = await asyncio.gather(*(s.reported_activity() for s in spawners))
        for row, activity, spawner in zip(rows, activities, spawners, strict=True):
            row["idle"] = _idle_text(activity)
            use = spawner.usage_now if spawner.active else None
            row["memory"] = f"{human_bytes(use.memory_bytes)} of {human_bytes(use.memory_limit_bytes)}" if use else ""
            row["cpu"] = f"{use.cpu_cores:.2f}" if use else ""
            home = hub.home_bytes.get(spawner.server_key) if hub else None
            room = hub.home_limit_bytes.get(spawner.server_key) if hub else None
            row["home"] = human_bytes(home) if home is not None else ""
            if home is not None and room:
                row["home"] += f" of {human_bytes(room)}"
            row["oom"] = f"{spawner.last_oom:%Y-%m-%d %H:%M} UTC" if spawner.last_oom else ""
            row["gpu_use"] = gpu_use_text(spawner.gpu_use_now) if spawner.active else ""
            row["gpu_notice"] = spawner.gpu_health_notice if spawner.active else ""
        disk = hub.disk_problem() if hub else ""
        single_origin = "" if self.settings.get("subdomain_host") else SINGLE_ORIGIN_WARNING
        html = await self.render_template(
            "devdock_admin.html",
            rows=rows,
            single_origin=single_origin,
            unknown=hub.unknown_servers if hub else [],
            disk_problem=disk,
            gpus=_gpu_rows(hub),
            waiting=_line_rows(hub),
            gpu_monitor_problem=hub.gpu_monitor_problem if hub else "",
            guarantee_gaps=missing_guarantees(self.settings["config"]),
        )
        self.finish(html)

    @web.authenticated
    @needs_scope("admin-ui")
    async def post(self):
        """Clear a GPU that was taken out of the pool (the form next to it): back at the next reading; or remove a
        start from the line for GPUs, or put it first."""
        for action in ("line_remove", "line_front"):
            key = self.get_body_argument(action, "")
            if key:
                await self._steer_line(action, key)
                self.redirect(self.request.path)
                return
        uuid = self.get_body_argument("clear_gpu", "")
        hub = hubwide.current()
        if hub is None or not hub.clear_gpu(uuid):
            raise web.HTTPError(400, f"There is no GPU {uuid[:80]!r} in this hub's inventory")
        self.log.info("devdock: %s cleared GPU %s; it returns to the pool at the next reading if healthy",
                      self.current_user.name, uuid)  # fmt: skip
        self.redirect(self.request.path)

    async def _steer_line(self, action: str, key: str) -> None:
        hub = hubwide.current()
        waiter = hub.gpu_queue.waiter(key) if hub is not None else None
        if waiter is None:
            raise web.HTTPError(400, f"{key[:200]!r} does not wait in line (any more)")
        name, _, server = key.partition("/")
        user = self.find_user(name)
        spawner = user.spawners.get(server) if user is not None else None
        if spawner is None:
            raise web.HTTPError(400, f"{key[:200]!r} does not wait in line (any more)")
        if action == "line_front":
            spawner.move_to_front_of_line()
            self.log.info("devdock: %s put %s first in line for GPUs", self.current_user.name, key)
            return
        # JupyterHub's own cancel of a pending start, as DELETE /users/<name>/server does it: cancel, give the
        # cancellation a second to unwind, stop.
        self.log.info("devdock: %s removes %s from the line for GPUs", self.current_user.name, key)
        if spawner._spawn_future is not None:
            spawner._spawn_future.cancel()
        await asyncio.sleep(1)
        await self.stop_single_user(user, server)

    @staticmethod
    def orm_user_class():

        return orm.User


def gpu_use_text(use) -> str:
    """``"3.2 GiB, 87 % busy"``: what a server does on its GPUs ("" when nothing is known)."""
    if use is None:
        return ""
    parts = [human_bytes(use.memory_mib << 20)]
    if use.utilization is not None:
        parts.append(f"{use.utilization:g} % busy")
    return ", ".join(parts)


def _gpu_rows(hub) -> list[dict]:
    """Every GPU and MIG instance: who holds it, what it reads, and whether it is out of the pool (and why)."""
    allocator = hub.allocator if hub is not None else None
    if allocator is None:
        return []
    holders, readings = allocator.holders(), hub.gpu_readings
    unhealthy = allocator.unhealthy()
    health = hub.gpu_health
    out = dict(getattr(health, "out", {}) or {})
    rows = []
    for g in allocator.inventory:
        reading = readings.get(g.parent or g.uuid)
        rows.append(
            {
                "label": g.label,
                "name": g.name,
                "uuid": g.uuid,
                "kind": "whole GPU" if not g.parent else f"MIG {g.mig_profile}",
                "holders": ", ".join(k.removesuffix("/") for k in holders.get(g.uuid, []) if not k.startswith("held/")),
                "utilization": (
                    f"{reading.utilization} %" if reading and reading.utilization is not None and not g.parent else ""
                ),
                "memory": (
                    f"{human_bytes(reading.memory_used_mib << 20)} of {human_bytes(reading.memory_total_mib << 20)}"
                    if reading and not g.parent
                    else ""
                ),
                "problem": "" if g.parent else (out.get(g.uuid) or unhealthy.get(g.uuid, "")),
                "in_pool": not (unhealthy.get(g.uuid) or unhealthy.get(g.parent)),
            }
        )
    return rows


def _line_rows(hub) -> list[dict]:
    """The starts waiting for GPUs, first first in each line, with their place and estimate (admins' view)."""
    if hub is None or hub.allocator is None:
        return []
    now = time.time()
    rows = []
    for waiter in hub.gpu_queue.waiting():
        kind = waiter.line.partition(":")[0]
        estimate = hub.gpu_queue.estimate(waiter.key, hub.allocator.free(waiter.key, kind), now)
        rows.append(
            {
                "key": waiter.key,
                "place": hub.gpu_queue.position(waiter.key),
                "wants": f"{waiter.count} × {'GPU' if kind == WHOLE else 'MIG ' + kind}"
                + (f" ({waiter.line.partition(':')[2]})" if ":" in waiter.line else ""),
                "since": f"{datetime.fromtimestamp(waiter.since, UTC):%Y-%m-%d %H:%M} UTC",
                "waited": f"{round((now - waiter.since) / 60)} min",
                "estimate": wait_words(estimate),
            }
        )
    return rows


def _idle_text(activity) -> str:
    """``"12 min (desktop input)"``: how long a running server has been idle, and its last kind of activity, as the
    server said it (checked: ``spawner_culling.read_activity``); "unknown" when it said nothing believable."""
    if activity is None:
        return ""
    if activity.idle_seconds is None:
        return "unknown"
    minutes = int(activity.idle_seconds // 60)
    text = f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"
    return f"{text} ({activity.source})" if activity.source else text


class UsageHandler(BaseHandler):
    """``/hub/devdock/usage``: the accounting of server runs (accounting.py), per month and per run, as a page or
    ``?format=csv|json``. Admins (``admin-ui``) see everyone's; everybody else their own."""

    @web.authenticated
    async def get(self):
        try:
            days = min(max(int(self.get_argument("days", "31")), 1), 3660)
        except ValueError:
            raise web.HTTPError(400, "days must be a whole number of days") from None
        fmt = self.get_argument("format", "html")
        if fmt not in ("html", "csv", "json"):
            raise web.HTTPError(400, "format must be html, csv or json")
        everyone = self.has_scope("admin-ui")
        self.current_user.spawners[""]  # noqa: B018 - makes the hub-wide object if no server has yet (a fresh hub)
        hub = hubwide.current()
        ledger = hub.ledger if hub is not None else None
        since = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)
        runs = ledger.runs(None if everyone else self.current_user.name, since) if ledger is not None else []
        if fmt == "json":
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"since": since.isoformat() + "Z", "runs": runs}))
            return
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="devdock-usage-{days}d.csv"')
            self.finish(accounting.to_csv(runs))
            return
        html = await self.render_template(
            "devdock_usage.html",
            enabled=ledger is not None,
            everyone=everyone,
            days=days,
            since=f"{since:%Y-%m-%d %H:%M} UTC",
            totals=accounting.monthly_totals(runs),
            group_totals=accounting.monthly_totals(runs, self._groups_of()) if everyone else [],
            runs=runs[:500],
            human_bytes=human_bytes,
        )
        self.finish(html)

    def _groups_of(self) -> dict[str, list[str]]:
        """{user: [their JupyterHub groups]}, for the totals by group."""
        return {u.name: sorted(g.name for g in u.groups) for u in self.db.query(orm.User)}


class ExtendHandler(BaseHandler):
    """``POST /hub/devdock/extend/<server>``: a user adds time to their own running server (the home page's button;
    refused with why while others wait for its GPUs, past the cap, or without a time limit)."""

    @web.authenticated
    async def post(self, server: str):
        user = self.current_user
        spawner = user.spawners.get(server) if server in user.orm_spawners else None
        if spawner is None or not spawner.ready or not hasattr(spawner, "extend_time"):
            raise web.HTTPError(404, f"You have no running server {server!r}")
        await spawner.extend_time()
        self.redirect(f"{self.hub.base_url}home")


class CullNoticeHandler(APIHandler):
    """``POST /hub/api/devdock/culled/<user>/<server>``: the idle culler says why it stops a server.

    Only the culler's role holds the scope. The reason is kept in the server's state (its user's home page shows
    it until the next start) and counted in the metrics.
    """

    async def post(self, user_name: str, server_name: str):
        # A custom scope exists only once the hub has loaded its config, so it is checked here rather than by
        # needs_scope (which checks scope names when this module is imported).
        if self.current_user is None:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        if not self.has_scope(culler.NOTICE_SCOPE):
            raise web.HTTPError(403, f"Action is not authorized with current scopes; requires {culler.NOTICE_SCOPE}")
        user = self.find_user(user_name)
        if user is None or server_name not in user.orm_spawners:
            raise web.HTTPError(404, "No such server")
        try:
            body = json.loads(self.request.body or b"{}")
            reason = str(body.get("reason", ""))[:300]
            inactive = float(body.get("inactive_seconds", 0) or 0)
        except (ValueError, TypeError, AttributeError):
            raise web.HTTPError(400, "Send a JSON object with reason and inactive_seconds") from None
        spawner = user.spawners[server_name]
        now = datetime.now(UTC).replace(microsecond=0)
        spawner.stop_reason = {"reason": reason, "at": now.isoformat(), "by": "the idle culler"}
        held = len(getattr(spawner, "gpu_ids", []) or [])
        metrics.CULLS.labels("gpu" if held else "cpu").inc()
        metrics.IDLE_GPU_SECONDS.inc(inactive * held)
        self.log.info("devdock: the idle culler stops %s: %s", spawner._log_name, reason)
        self.set_status(204)


#: The SSH gateway's only scope: which users keep a key, and where their servers' sshd is.
GATEWAY_SCOPE = "custom:devdock:ssh-gateway"
#: Seconds the route waits for a start it made (ssh_gateway_autostart) before it answers "starting".
GATEWAY_START_ANSWER = 1.0


class _GatewayHandler(APIHandler):
    """The SSH gateway's questions (``images/ssh-gateway``); only a token with ``GATEWAY_SCOPE`` may ask."""

    def _check_scope(self) -> None:
        if self.current_user is None or not self.has_scope(GATEWAY_SCOPE):
            raise web.HTTPError(403, f"Action is not authorized with current scopes; requires {GATEWAY_SCOPE}")

    def _exact_argument(self, name: str) -> str:
        """A query argument as it was sent. (``get_argument`` strips it and turns control characters into spaces:
        the user ``"eve\\x1cx"``, whom an identity provider may name so, would be looked up as ``"eve x"``.)"""
        values = self.request.query_arguments.get(name) or [b""]
        return self.decode_argument(values[0], name=name)

    async def _owners_of(self, key: str) -> list[str]:
        """The users who keep ``key``, from the hub's index of the key files (read once, in a thread)."""
        spawner_config = self.settings["config"].get("DevDockSpawner", {})
        index = key_index(spawner_config.get("ssh_keys_dir", os.path.abspath("ssh-keys")))
        await index.ready()
        return index.owners_of(key)


class GatewayKeysHandler(_GatewayHandler):
    """``GET /hub/api/devdock/ssh-gateway/keys?key=TYPE BLOB``: the users who keep this public key, and where
    their running servers' sshd listens (``{"users": [...], "routes": {"alice/proj": "10.0.0.5:22"}}``), so that
    the gateway goes straight there; for anything else it asks ``route``.

    sshd asks this for every key any client offers, before authentication: the answer comes from memory
    (ssh.KeyIndex), never from reading the users' files."""

    async def get(self):
        self._check_scope()
        key = self.get_argument("key", "")[:20000]
        users, routes = [], {}
        for name in await self._owners_of(key):
            user = self.find_user(name)
            if user is None:
                continue
            users.append(name)
            for spawner in _devdock_spawners(user):
                if spawner.ssh_via_gateway and spawner.active and spawner.ready and spawner.server:
                    routes[spawner.ssh_gateway_target] = f"{spawner.server.ip}:{SSH_CONTAINER_PORT}"
        if users:
            self.log.info("devdock: ssh gateway: key %s of %s (running: %s)", fingerprint(key),
                          ", ".join(map(repr, users)), ", ".join(map(repr, sorted(routes))) or "none")  # fmt: skip
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"users": users, "routes": routes}))


class GatewayRouteHandler(_GatewayHandler):
    """``GET /hub/api/devdock/ssh-gateway/route?user=&server=&key=``: where that server's sshd listens.

    The key must be one of the user's own (checked again here: the gateway's token alone opens nothing), and the
    server must be running with the gateway on (``ssh_mode``). Every answer is in the hub's log.
    """

    async def get(self):
        self._check_scope()
        name, server, key = (self._exact_argument(a)[:20000] for a in ("user", "server", "key"))
        user, offered = self.find_user(name), fingerprint(key)
        if user is None or not offered or user.name not in await self._owners_of(key):
            self.log.warning("devdock: ssh gateway refused %s for %r/%r", offered or "a junk key", name, server)
            raise web.HTTPError(403, f"this key does not belong to {name!r}")
        label = f"{name}'s server {server!r}" if server else f"{name}'s default server"
        spawner = user.spawners[server] if server in user.orm_spawners or server == "" else None
        if not isinstance(spawner, DevDockSpawner) or not spawner.ssh_via_gateway:
            raise web.HTTPError(404, f"{label} does not exist or has no SSH through the gateway")
        if not (spawner.active and spawner.ready and spawner.server):
            if not spawner.ssh_gateway_autostart:
                raise web.HTTPError(409, f"{label} is not running: start it on the hub, then connect again")
            if not spawner.pending:
                self.log.info("devdock: ssh gateway: %s connects, so %s starts", name, label)
                # As the user's own start would (its last options). The answer comes after a second at most, so
                # that the user reads "starting" at once; the start goes on, and the gateway asks again.
                start = asyncio.ensure_future(self.spawn_single_user(user, server))
                start.add_done_callback(lambda done: _log_failed_start(self.log, label, done))
                try:
                    await asyncio.wait_for(asyncio.shield(start), GATEWAY_START_ANSWER)
                except TimeoutError:
                    pass
            if not (spawner.active and spawner.ready and spawner.server):
                self.set_status(202)
                self.finish(json.dumps({"starting": True, "server": label}))
                return
        self.log.info(
            "devdock: ssh gateway: key %s of %s -> %s (%s at %s:%s)", fingerprint(key), name, label,
            spawner.object_name, spawner.server.ip, SSH_CONTAINER_PORT,
        )  # fmt: skip
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"host": spawner.server.ip, "port": SSH_CONTAINER_PORT, "server": label}))


def _log_failed_start(log, label: str, done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("devdock: ssh gateway: %s did not start: %s", label, done.exception())


class CullPolicyHandler(APIHandler):
    """``GET /hub/api/devdock/cull-policy``: the culling policy of this hub's final configuration, for the culler."""

    async def get(self):
        if self.current_user is None or not self.has_scope(culler.NOTICE_SCOPE):
            raise web.HTTPError(403, f"Action is not authorized with current scopes; requires {culler.NOTICE_SCOPE}")

        policy = culling_policy(self.settings["config"])
        extensions = {
            f"{user.name}/{spawner.name or ''}": spawner.max_age_extension
            for user in list(self.users.values())
            for spawner in _devdock_spawners(user)
            if spawner.active and spawner.max_age_extension
        }
        if extensions:
            policy = replace(policy, extensions=extensions)
        hub = hubwide.current()
        if hub is not None and hub.bookings():
            policy = replace(policy, deadlines={
                key: (when.replace(tzinfo=UTC).isoformat(), f"a GPU reservation for {booking.whom} starts at "
                      f"{hub.local_words(when)} and needs its GPU")
                for key, (when, booking) in hub.reservation_deadlines().items()
            })  # fmt: skip
        if hub is not None and len(hub.gpu_queue):
            # Profiles whose kind of GPU someone waits for now: their idle servers go sooner.
            waited_for = {w.line.partition(":")[0] for w in hub.gpu_queue.waiting()}
            profiles = configured_profiles(self.settings["config"])
            policy = replace(policy, contended=tuple(p.slug for p in profiles if p.gpus and p.gpu_kind in waited_for))
        self.set_header("Content-Type", "application/json")
        self.finish(policy.to_json())


def handlers() -> list[tuple]:
    return [
        (r"/ssh", SSHPageHandler),
        (r"/devdock/admin", AdminOverviewHandler),
        (r"/devdock/usage", UsageHandler),
        (r"/devdock/extend/([^/]*)", ExtendHandler),
        (r"/devdock/reservations", ReservationsHandler),
        (r"/api/devdock/culled/([^/]+)/([^/]*)", CullNoticeHandler),
        (r"/api/devdock/cull-policy", CullPolicyHandler),
        (r"/api/devdock/ssh-gateway/keys", GatewayKeysHandler),
        (r"/api/devdock/ssh-gateway/route", GatewayRouteHandler),
    ]


def configure(c, report_gpu_support: bool = True) -> None:
    """Add devdock's pages and templates to a JupyterHub config object.

    Also says in the hub's log, at start-up, whether the Docker engine can hand out GPUs at all
    (the hub's logger is not set up yet while config loads, so this goes to stderr, which the hub's
    log shows).
    """
    c.JupyterHub.extra_handlers = [*c.JupyterHub.get("extra_handlers", []), *handlers()]
    c.JupyterHub.custom_scopes = {
        **c.JupyterHub.get("custom_scopes", {}),
        culler.NOTICE_SCOPE: {"description": "Tell devdock why the idle culler stops a server"},
        GATEWAY_SCOPE: {"description": "devdock's SSH gateway: who keeps a public key, where their servers are"},
    }
    c.JupyterHub.template_paths = [TEMPLATES, *c.JupyterHub.get("template_paths", [])]
    # JupyterHub's request log, and a word to a server that someone other than its owner stopped (accounting).
    c.JupyterHub.tornado_settings = {**c.JupyterHub.get("tornado_settings", {}), "log_function": log_request}
    resolve_names_in_threads()
    if report_gpu_support:
        print(f"[devdock] GPU support on this Docker engine: {_gpu_support_summary()}", file=sys.stderr)


def log_request(handler) -> None:
    """JupyterHub's own request log; then, when an admin or a service (not the server's owner) stopped a server
    through the REST API (``DELETE /hub/api/users/<name>/server[s/<server>]``, as JupyterHub's admin page does),
    the server's accounting row says so (``admin``). JupyterHub gives a spawner no word of who stops it; the log
    function is the one place that sees the request and its answer."""
    jupyterhub.log.log_request(handler)
    if handler.request.method != "DELETE" or handler.get_status() not in (202, 204):
        return
    if not isinstance(handler, jupyterhub.apihandlers.users.UserServerAPIHandler):
        return
    requester = getattr(handler, "_jupyterhub_user", None)  # the request's own, already authenticated
    owner, server = (list(handler.path_args) + ["", ""])[:2]
    if requester is None or (isinstance(requester, jupyterhub.user.User) and requester.name == owner):
        return  # nobody known, or the owner's own stop
    user = handler.users[owner] if owner in handler.users else None
    spawner = user.spawners.get(server or "") if user is not None else None
    by = getattr(requester, "name", "?")
    if spawner is not None and getattr(spawner, "accounting_id", 0):
        spawner.stopped_by_other(by)  # still stopping (202): its row ends "admin"
        return
    hub = hubwide.current()  # stopped (204): JupyterHub has let go of the spawner; its row closed "stopped"
    ledger = hub.ledger if hub is not None else None
    if ledger is not None:
        try:
            if ledger.amend_last_run(owner, server or "", "stopped", "admin"):
                handler.log.info("devdock: %s/%s was stopped by %s", owner, server or "", by)
        except Exception as e:  # noqa: BLE001 - the row keeps "stopped"
            handler.log.warning("devdock: the accounting row of %s/%s keeps 'stopped': %s", owner, server, e)


def resolve_names_in_threads() -> None:
    """The hub's aiohttp connections resolve host names with getaddrinfo in a thread, not through aiodns.

    JupyterHub requires aiodns, which aiohttp then uses by default; with pycares 5 a hub starting with many
    servers to check died of SIGSEGV in pycares' channel-closing thread (twice in this project's test runs; the
    same crash is aio-libs/aiohttp#13203). The hub resolves few names (the proxy's, the servers' are addresses),
    so aiohttp's own threaded resolver costs nothing.
    """
    aiohttp.connector.DefaultResolver = aiohttp.resolver.ThreadedResolver


def _gpu_support_summary() -> str:
    try:
        return engine_gpu_support(docker.from_env(timeout=10).info())["summary"]
    except Exception as e:  # noqa: BLE001 - the hub must start even when the engine does not answer
        return f"unknown: the Docker engine does not answer ({e})"

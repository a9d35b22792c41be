"""Homes: which volume is a server's home, who it belongs to, and what happens to it when its user goes (a mixin).

Mixed into :class:`~devdock_spawner.spawner.DevDockSpawner`; uses its ``docker()`` seam and names. A home is a
named volume labelled with its owner; another owner's volume is never mounted, one made under devdock 0.1's
naming is found again by its labels, and offboarding removes (or archives) it with its user.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from docker.errors import APIError
from tornado import web
from traitlets import CaselessStrEnum, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import homeimage, naming


def _handler_in(frames) -> web.RequestHandler | None:
    """The first ``self`` among ``frames`` that is a request handler serving a ``DELETE``."""
    for frame in frames:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, web.RequestHandler) and candidate.request.method == "DELETE":
            return candidate
    return None


def _coroutine_frames(task: asyncio.Task) -> list:
    """The frames of a suspended task's chain of awaited coroutines, outermost first."""
    frames, coro = [], task.get_coro()
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        frames.append(coro.cr_frame)
        coro = coro.cr_await
    return frames


def request_deleting(spawner) -> web.RequestHandler | None:
    """The hub's request handler that is deleting ``spawner``, or None when devdock cannot tell.

    JupyterHub tells a spawner *that* it is deleted (``delete_forever``), not *who* asked. It calls it from inside
    the API handler of ``DELETE /users/<name>`` (the handler is then a caller up this very stack) or, for
    ``DELETE /users/<name>/servers/<server>``, from a task of its own that the handler (or the closure it schedules
    once the server stopped) awaits with ``spawner`` among its locals. This reads JupyterHub's call structure, not a
    public API: when a release calls it some other way nothing is found and devdock keeps the home
    (:func:`may_erase_home`), which the integration test of an admin's removal then reports.
    """
    try:
        frame = sys._getframe(2)
    except ValueError:
        frame = None
    stack = []
    while frame is not None:
        stack.append(frame)
        frame = frame.f_back
    handler = _handler_in(stack)
    if handler is not None:
        return handler
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no event loop
        return None
    for task in tasks:
        frames = _coroutine_frames(task)
        if any(f.f_locals.get("spawner") is spawner for f in frames):
            handler = _handler_in(reversed(frames))
            if handler is not None:
                return handler
    return None


def may_erase_home(policy: str, owner: str, server: str, requester: str, admin: bool) -> bool:
    """Whether the removal of ``owner``'s server ``server`` may erase its home (``offboarding`` says how).

    ``requester``: ``"user:<name>"``, ``"service:<name>"``, or ``""`` when devdock cannot tell who asked;
    ``admin``: the request holds ``admin:servers`` or ``delete:users`` for ``owner`` (admins do; so does whoever
    may delete the user altogether). A default server is deleted only with its user (JupyterHub refuses anything
    else), which needs ``delete:users``. Stopping a server, or removing a named one with no more than
    ``delete:servers`` (the idle culler's scope, a course tool's), never erases anything under the default policy.
    """
    if not server or policy == "anyone":
        return True
    if admin:
        return True
    return policy == "owner" and requester == f"user:{owner}"


class HomesMixin(LoggingConfigurable):
    """Home volumes: resolution, the owner check, offboarding."""

    #: The home volume found for this spawn by ``resolve_home_volume`` (empty: not looked up yet).
    _home_volume = ""
    #: Bytes of this spawn's home when it is a filesystem image (0: a plain volume, no limit).
    _home_limit = 0

    def get_env(self):
        """The home's size limit, when it has one (the image's ``df`` and the desktop show it)."""
        env = super().get_env()
        if self._home_limit:
            env["DEVDOCK_HOME_SIZE"] = str(self._home_limit)
        return env

    home_size = Unicode(
        "",
        config=True,
        help="""
        Size limit of every home made from now on, e.g. ``"20G"`` (per profile in ``overrides`` too). Such a home
        is an ext4 filesystem image (a sparse file: it takes on the host's disk only what is written) in
        ``home_images_dir``, on a loop device, mounted by Docker's ``local`` driver; writing past it fails with
        "No space left on device" inside that server only. Raising it grows homes at their next start; lowering
        it never shrinks one. Homes made without a limit (before it was set) keep working as they are. Empty:
        homes are plain volumes without a limit. Single engine only (on a Swarm the volume driver decides).
        """,
    )

    @validate("home_size")
    def _valid_home_size(self, proposal):
        if proposal.value:
            try:
                homeimage.parse_size(proposal.value)  # a clear error for the admin at start-up
            except ValueError as e:
                raise TraitError(f"home_size: {e}") from e
        return proposal.value

    home_images_dir = Unicode(
        "/var/lib/devdock/homes",
        config=True,
        help="""
        Host folder of the home images (``home_size``): ``<home volume>.img`` and, while a server starts, the
        ``<home volume>.dev`` link its volume mounts. Root's only; on the disk that should hold the homes.
        """,
    )

    home_helper_image = Unicode(
        "devdock/hub:latest",
        config=True,
        help="""
        Image of the helper that makes, attaches and removes home images (``home_size``): one container of it per
        hub stays running (``<prefix>-home-helper-<hub_id>-...``) and runs ``devdock-home-image``
        (``devdock_spawner.homeimage``) with ``mkfs.ext4``, ``debugfs`` and ``losetup`` (devdock's hub image has
        them) for each step, without network, with the loop devices and no capability but ``MKNOD``.
        """,
    )

    @property
    def home_volume(self) -> str:
        """Name of this server's home volume: ``<prefix>-home-<user>[_<server>]``, or the one found for it."""
        return self._home_volume or naming.home_volume_name(self.prefix, self.user_slug, self.server_slug)

    async def resolve_home_volume(self) -> str:
        """This spawn's home volume: the one named for this server, else one devdock made under its old naming.

        A home made before devdock 0.2 is named after a slug with a 32-bit hash; it is used again only if its
        ``io.devdock.owner`` and ``io.devdock.server`` labels name this very user and server, so that nobody
        can reach another user's old home by choosing a username whose old slug matches.
        """
        current = naming.home_volume_name(self.prefix, self.user_slug, self.server_slug)
        server = self.name or ""
        legacy = naming.home_volume_name(
            self.prefix, naming.legacy_slug(self.user.name), naming.legacy_slug(server) if server else ""
        )
        self._home_volume = self._legacy_login = ""
        if legacy != current and await self._inspect_volume(current) is None:
            info = await self._inspect_volume(legacy)
            labels = (info or {}).get("Labels") or {}
            if labels.get(naming.OWNER_LABEL) == self.user.name and labels.get(naming.SERVER_LABEL) == server:
                self.log.info("Using %s's home %s, named before devdock 0.2", self._log_name, legacy)
                self._home_volume = legacy
                self._legacy_login = naming.checked_login(labels.get(naming.LOGIN_LABEL, ""))
        return self.home_volume

    async def _inspect_volume(self, name: str) -> dict | None:
        try:
            return await self.docker("inspect_volume", name)
        except APIError as e:
            if e.status_code == 404:
                return None
            raise

    @default("volumes")
    def _default_volumes(self):
        """``{"{home_volume}": "/home/{login}"}``: one persistent home per user and named server."""
        return {"{home_volume}": "/home/{login}"}

    def _own_volumes(self) -> list[str]:
        """Named volumes of this server alone: those whose name in ``volumes`` is a template ({home_volume},
        {username}, ...). A volume named literally (a shared dataset) belongs to nobody in particular."""
        own = []
        for template in self.volumes:
            source = self.format_volume_name(template, self)
            if "{" in template and "/" not in source:
                own.append(source)
        return own

    async def ensure_volumes(self):
        """Create this server's own volumes up front with devdock's labels; refuse one another user owns.

        With ``home_size`` a new home is a filesystem image; a home that is one is attached for this start. A Swarm
        service's node makes its home volume itself, with the labels devdock gives it (``object_type``).
        """
        self._home_limit = 0
        if self.object_type != "container":
            return
        for source in self._own_volumes():
            info = await self._inspect_volume(source)
            if info is None:
                if source == self.home_volume and self.home_size:
                    await self._attach_home_image(source, new=True)
                    device = self._home_image_path(source, ".dev")
                    options = {"type": "ext4", "device": device, "o": "nosuid,nodev,noinit_itable,discard"}
                    await self.docker(
                        "create_volume", name=source, driver="local", driver_opts=options, labels=self._labels()
                    )
                else:
                    await self.docker("create_volume", name=source, labels=self._labels())
                continue
            labels = info.get("Labels") or {}
            owner = labels.get(naming.OWNER_LABEL)
            if owner is not None and (
                owner != self.user.name or labels.get(naming.SERVER_LABEL, "") != (self.name or "")
            ):
                self.log.error(
                    "Refusing to mount volume %s for %s: its %s label says it belongs to %r (server %r)",
                    source, self._log_name, naming.OWNER_LABEL, owner, labels.get(naming.SERVER_LABEL, ""),
                )  # fmt: skip
                raise web.HTTPError(
                    409,
                    f"The volume {source} belongs to another user or server, so devdock will not mount it for "
                    f"{self.user.name}. Nothing was changed. An admin can see whose it is with "
                    f"'docker volume inspect {source}'.",
                )
            if self._is_home_image(info):
                await self._attach_home_image(source)

    # --- homes with a size limit -------------------------------------------------------------

    def _home_image_path(self, volume: str, suffix: str) -> str:
        return os.path.join(self.home_images_dir, volume + suffix)

    def _is_home_image(self, info: dict) -> bool:
        device = (info.get("Options") or {}).get("device", "")
        return device == self._home_image_path(info["Name"], ".dev")

    async def _attach_home_image(self, volume: str, new: bool = False) -> None:
        """Make (or grow) the home's image and attach it, so that Docker can mount its volume."""
        size = homeimage.parse_size(self.home_size) if self.home_size else 0
        image, link = self._home_image_path(volume, ".img"), self._home_image_path(volume, ".dev")
        result = await self.home_image_step("attach", image, str(size), link, *(["new"] if new else []))
        self._home_limit = result["size"]
        if result["created"]:
            self.log.info("devdock: made home %s of %s with a limit of %s", volume, self._log_name, self.home_size)
        elif size > result["size"]:
            self.log.warning("devdock: home %s of %s is in use: it grows to %s at its next start", volume,
                             self._log_name, self.home_size)  # fmt: skip
        elif size and size < result["size"]:
            self.log.info("devdock: home %s keeps its %s bytes (home_size %s never shrinks a home)", volume,
                          result["size"], self.home_size)  # fmt: skip

    async def release_home_image(self) -> None:
        """The container runs, so its home is mounted: let the loop device go when the mount goes."""
        if self._home_limit:
            await self.home_image_step("release", self._home_image_path(self.home_volume, ".dev"))

    async def home_image_step(self, *args: str) -> dict:
        """One ``devdock_spawner.homeimage`` command in the hub's resident home helper; its JSON answer."""
        return await self.devdock_hub.home_image_step(
            self.home_helper_image,
            self.home_images_dir,
            list(args),
            f"The home of {self.user.name} could not be prepared",
        )

    # --- offboarding -------------------------------------------------------------------------

    offboarding = CaselessStrEnum(
        ["remove", "archive", "keep"],
        "remove",
        config=True,
        help="""
        What happens to a server's home when its user is deleted, or its named server removed by an admin
        (``named_server_home_removal`` says whose removal counts):
        ``remove`` (the default) removes the home volume, ``archive`` first writes it to
        ``offboarding_archive`` as ``<volume>-<UTC time>.tar.gz`` and then removes it, ``keep`` leaves it (as
        devdock 0.1 did). With ``remove`` and ``archive`` a username created again never finds the old
        person's files; the user's SSH key file goes with their default server either way (with ``keep``
        too: keys of a deleted user must never open the next person's server).
        """,
    )

    named_server_home_removal = CaselessStrEnum(
        ["admin", "owner", "anyone"],
        "admin",
        config=True,
        help="""
        Whose removal of a named server (``DELETE /hub/api/users/<name>/servers/<server>`` with ``remove``) erases
        its home as ``offboarding`` says: ``admin`` (the default): only a request that holds ``admin:servers`` or
        ``delete:users`` for its user (an admin, the ``devdock-ops`` service); ``owner``: that, or its owner
        removing it themselves (the delete button of JupyterHub's home page); ``anyone``: whoever may remove it,
        which takes only ``delete:servers`` (the idle culler's scope, a course tool's).
        A home that is not erased is kept with its labels: the log says so, the same server name made again finds
        it, and an admin erases it by removing that server. Deleting a user (``delete:users``) erases all their
        homes, whatever this says.
        """,
    )

    offboarding_archive = Unicode(
        "",
        config=True,
        help="""
        Where ``offboarding = "archive"`` writes homes: a host folder (absolute path) or a Docker volume name.
        The archives are readable by root only. Required with ``archive``. Example: ``"/srv/devdock/archive"``.
        """,
    )

    def delete_forever(self):
        """The user (or this named server) is deleted for good: remove what devdock keeps for them.

        JupyterHub calls this after the server stopped, for every server of a deleted user and for a named
        server deleted with ``remove``. The default server only goes with its user, so its key file goes with it.
        Who asked is read here, while JupyterHub's request still waits on this call (see :func:`request_deleting`);
        the work is the coroutine returned, which JupyterHub awaits.
        """
        handler = request_deleting(self)
        requester, admin = "", False
        if handler is not None and getattr(handler, "current_user", None) is not None:
            who = handler.current_user
            requester = f"{getattr(who, 'kind', 'user')}:{who.name}"
            admin = any(
                handler.has_scope(f"{scope}!user={self.user.name}") for scope in ("admin:servers", "delete:users")
            )
        erase = may_erase_home(self.named_server_home_removal, self.user.name, self.name or "", requester, admin)
        return self.delete_forever_part(erase, requester or "a caller devdock cannot name")

    async def delete_forever_part(self, erase: bool, requester: str) -> None:
        """The home's part of a deletion (each part of the spawner adds its own through ``super()``, after this)."""
        await self._remove_leftover_container()
        if self.offboarding != "keep":
            await self.resolve_home_volume()
            if erase:
                for volume in self._own_volumes():
                    await self._offboard_volume(volume)
            else:
                self.log.warning(
                    "devdock: kept the home %s of %s's removed server %r: %s removed it, and erasing a home takes "
                    "an admin (named_server_home_removal = %r); making the server again finds it, removing it "
                    "then as an admin erases it", ", ".join(self._own_volumes()), self.user.name, self.name,
                    requester, self.named_server_home_removal,
                )  # fmt: skip

    async def _remove_leftover_container(self) -> None:
        """A stopped container kept for inspection (``keep_failed_containers``) would hold the home volume."""
        try:
            await self.docker("remove_container", self.object_name, force=True)
        except APIError as e:
            if e.status_code != 404:
                raise

    async def _offboard_volume(self, volume: str) -> None:
        info = await self._inspect_volume(volume)
        if info is None:
            return
        owner = (info.get("Labels") or {}).get(naming.OWNER_LABEL)
        if owner is not None and owner != self.user.name:
            self.log.error("devdock: not removing %s of %s: it belongs to %r", volume, self._log_name, owner)
            return
        image = self._is_home_image(info)
        if self.offboarding == "archive":
            if image:
                await self._attach_home_image(volume)
            await self._archive_volume(volume)
        try:
            await self.docker("remove_volume", volume)
        except APIError as e:
            self.log.error("devdock: could not remove %s of deleted %s: %s", volume, self._log_name, e)
            return
        if image:
            await self.home_image_step(
                "remove", self._home_image_path(volume, ".img"), self._home_image_path(volume, ".dev")
            )
        self.log.info("devdock: removed home %s of deleted %s", volume, self._log_name)

    async def _archive_volume(self, volume: str) -> None:
        """``<offboarding_archive>/<volume>-<UTC time>.tar.gz`` by a one-shot container of the desktop image."""
        if not self.offboarding_archive:
            raise web.HTTPError(500, "offboarding = 'archive' needs c.DevDockSpawner.offboarding_archive")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = f"/archive/{volume}-{stamp}.tar.gz"
        host = self.client.create_host_config(
            binds={
                volume: {"bind": "/home", "mode": "ro"},
                self.offboarding_archive: {"bind": "/archive", "mode": "rw"},
            },
            network_mode="none",
            cap_drop=["ALL"],
            cap_add=["DAC_READ_SEARCH"],  # read every file of the home; the archive belongs to root
            security_opt=["no-new-privileges:true"],
        )
        await self.devdock_hub.one_shot(
            self.image,
            # --sparse: a sparse file (``truncate -s 15T ~/x``) is archived as its data and its holes (GNU tar finds
            # them with SEEK_HOLE), not read as terabytes of zeros for hours.
            ["sh", "-c", 'umask 077 && tar -C /home --sparse -czf "$0.partial" . && mv "$0.partial" "$0"', target],
            host, "offboarding", f"Archiving {volume} failed, so it was not removed",
            "it archives the homes of deleted users",
        )  # fmt: skip
        self.log.info("devdock: archived home %s of deleted %s to %s", volume, self._log_name, target)

"""The hub's helper for homes with a size limit: one resident container that the hub asks, instead of one per step.

Homes with a size limit (``home_size``) are ext4 images on loop devices; the hub has the Docker socket, not root on
the host, so a helper container of the hub image runs ``devdock-home-image`` (:mod:`devdock_spawner.homeimage`) to
make, attach, release and remove them. A one-shot container per step costs about 0.9 s (create, start, wait, logs,
remove) and a start takes two steps; :class:`HomeHelper` keeps one helper running per image and folder, confined as
the one-shot was (no network, no capability but ``MKNOD``, the loop devices only, a read-only root, no new
privileges, nothing else mounted), and runs each step in it with ``docker exec``. Users cannot reach it: it is on no
network and only the hub talks to the engine. It is made again when it is gone, stopped, or of an older image.
"""

from __future__ import annotations

import hashlib
import json

from docker.errors import APIError, ImageNotFound
from tornado import web

from . import homeimage, naming
from .container import last_lines
from .images import missing_image_message

#: What the helper image does, for the sentence when it is missing.
PURPOSE = "it makes, attaches and removes the homes with a size limit (home_size)"


class HomeHelper:
    """The resident home helper of the hub-wide object (``self.docker``, ``self.lock``, ``self.settings``)."""

    def _init_home_helper(self) -> None:
        #: the helper container's id, by (image, home images folder)
        self._home_helpers: dict[tuple[str, str], str] = {}

    async def home_image_step(self, image: str, folder: str, args: list[str], failure: str) -> dict:
        """One ``devdock-home-image`` command in the resident helper; its JSON answer (HTTP 500 with ``failure``)."""
        for attempt in range(2):
            helper = await self._home_helper(image, folder, failure)
            try:
                run = await self.docker("exec_create", helper, ["devdock-home-image", *args])
                out, err = await self.docker("exec_start", run["Id"], demux=True)
                code = (await self.docker("exec_inspect", run["Id"]))["ExitCode"]
            except APIError as e:
                if e.status_code not in (404, 409) or attempt:
                    raise
                self.log.warning("devdock: the home helper is gone or stopped (%s); making it again", e)
                self._home_helpers.pop((image, folder), None)
                continue
            if code != 0:
                text = last_lines((err or b"") + (out or b""))
                self.log.error("devdock: home-image helper failed: %s", text)
                raise web.HTTPError(500, f"{failure}: {text}")
            return json.loads((out or b"").decode(errors="replace").strip().splitlines()[-1])
        raise AssertionError("unreachable")  # pragma: no cover

    def _home_helper_name(self, image: str, folder: str) -> str:
        digest = hashlib.sha256(f"{image}\0{folder}".encode()).hexdigest()[:8]
        return f"{self.settings.prefix}-home-helper-{self.settings.hub_id}-{digest}"

    async def _home_helper(self, image: str, folder: str, failure: str) -> str:
        """The running helper for ``image`` and ``folder``: found (once per hub process) or made."""
        key = (image, folder)
        if key in self._home_helpers:
            return self._home_helpers[key]
        async with self.lock("home-helper"):
            if key not in self._home_helpers:
                self._home_helpers[key] = await self._find_or_make_home_helper(image, folder, failure)
        return self._home_helpers[key]

    async def _find_or_make_home_helper(self, image: str, folder: str, failure: str) -> str:
        name = self._home_helper_name(image, folder)
        try:
            info = await self.docker("inspect_image", image)
        except ImageNotFound as e:
            message = missing_image_message(image, PURPOSE)
            self.log.error("devdock: %s: %s", failure, message)
            raise web.HTTPError(503, f"{failure}. {message}") from e
        wanted = info["Id"]
        try:
            found = await self.docker("inspect_container", name)
        except APIError as e:
            if e.status_code != 404:
                raise
            found = None
        if found is not None:
            if found["State"].get("Running") and found.get("Image") == wanted:
                return found["Id"]
            await self.docker("remove_container", found["Id"], force=True)  # stopped, or of an older image
        host = self.client.create_host_config(
            binds={folder: {"bind": folder, "mode": "rw"}},
            network_mode="none",
            cap_drop=["ALL"],
            cap_add=["MKNOD"],  # the node of the free loop device, in the helper's own /dev
            devices=["/dev/loop-control:/dev/loop-control:rwm"],
            device_cgroup_rules=[f"b {homeimage.LOOP_MAJOR}:* rwm"],
            security_opt=["no-new-privileges:true"],
            read_only=True,
            init=True,  # sleep as PID 1 would ignore the stop signal
        )
        labels = {
            naming.MANAGED_LABEL: "true",
            naming.ROLE_LABEL: "home-helper",
            naming.HUB_LABEL: self.settings.hub_id,
            **self.settings.extra_labels,
        }
        # An image built by `docker compose` carries its project's labels, and a container inherits its image's: the
        # helper would count as one of the project's own containers (a second "hub" in `docker compose ps`).
        inherited = (info.get("Config") or {}).get("Labels") or {}
        labels.update({key: "" for key in inherited if key.startswith("com.docker.compose.")})
        try:
            container = await self.docker(
                "create_container", wanted, name=name, entrypoint=["sleep", "infinity"], host_config=host, labels=labels
            )
        except APIError as e:
            if e.status_code != 409:
                raise
            container = await self.docker("inspect_container", name)  # another hub of the same name made it first
        await self.docker("start", container["Id"])
        self.log.info("devdock: started the home helper %s (%s, %s)", name, image, folder)
        return container["Id"]

"""The SSH part of DevDockSpawner: settings, port allocation and keys (a mixin).

Kept apart from spawner.py so that each module stays readable; the pure logic lives in ports.py
(allocation) and ssh.py (key validation, key store).
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
from urllib.parse import quote

from docker.errors import APIError
from tornado import web
from traitlets import Bool, CaselessStrEnum, Int, Tuple, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .naming import SSH_PORT_LABEL
from .ports import NoFreePort, PortAllocator, port_taken
from .ssh import KeyStore, fingerprint, key_index

#: The container's SSH port: privileged, bound by the entrypoint (see container.PRIVILEGED_PORTS).
SSH_CONTAINER_PORT = 22


class SSHMixin(LoggingConfigurable):
    """SSH into each server: sshd in the container, a stable host port, hub-managed keys.

    Mixed into :class:`~devdock_spawner.spawner.DevDockSpawner`; uses its ``docker()`` seam and names.
    """

    # --- SSH ---------------------------------------------------------------------------------

    ssh_enabled = Bool(
        True,
        config=True,
        help="""
        Give every server an SSH port: sshd runs in the container as the user (key-only, no root,
        no passwords) and container port 22 is published on a host port from ``ssh_port_range``. Port 22 is
        bound by the image's entrypoint before it drops root, so users cannot replace the listener.
        Default: True.
        """,
    )

    ssh_port_range = Tuple(
        Int(),
        Int(),
        default_value=(42000, 42999),
        config=True,
        help="""
        Host ports for SSH, inclusive. Each user and named server keeps its port across stops, starts
        and hub restarts. Open this range in the host firewall. Example: ``(2200, 2299)``.
        Default: ``(42000, 42999)``.
        """,
    )

    ssh_bind_address = Unicode(
        "0.0.0.0",
        config=True,
        help="""
        Host address the SSH ports are published on. ``0.0.0.0`` (the default) for a real host;
        ``127.0.0.1`` to reach them only from the host itself (tests, or SSH through a bastion).
        """,
    )

    ssh_host = Unicode(
        config=True,
        help="""
        Host name users should connect to, shown in ``ssh -p PORT login@HOST`` lines.
        Default: this machine's fully qualified name. Example: ``"gpu01.example.org"``.
        """,
    )

    @default("ssh_host")
    def _default_ssh_host(self):
        return socket.getfqdn()

    ssh_mode = CaselessStrEnum(
        ["ports", "gateway", "both"],
        "ports",
        config=True,
        help="""
        How users reach their server's sshd. ``gateway``: through devdock's SSH gateway on one port for
        everyone (``images/ssh-gateway``: OpenSSH, keys asked from the hub at every connection, each key relayed
        to its owner's own servers only; no host port per server). ``ports``: each server publishes its own
        host port from ``ssh_port_range``. ``both``: the two side by side. devdock's compose stack uses
        ``gateway``.
        """,
    )

    ssh_gateway_host = Unicode(
        config=True,
        help="""Host name of the SSH gateway, shown in the ``~/.ssh/config`` block on ``/hub/ssh``. Default:
        ``ssh_host``.""",
    )

    @default("ssh_gateway_host")
    def _default_ssh_gateway_host(self):
        return self.ssh_host

    ssh_gateway_port = Int(
        2222, config=True, help="""Port of the SSH gateway (``DEVDOCK_SSH_GATEWAY_PORT``). Default: 2222."""
    )

    ssh_gateway_autostart = Bool(
        False,
        config=True,
        help="""
        Connecting through the SSH gateway to a stopped server starts it (with the options of its last start)
        and lands in it once it runs; the user sees a line while it starts. Off by default: a stopped server
        then says so and is started on the hub (``DEVDOCK_SSH_GATEWAY_AUTOSTART``).
        """,
    )

    ssh_gateway_host_key_file = Unicode(
        "",
        config=True,
        help="""
        The gateway's public host key (``ssh_host_ed25519_key.pub`` in its ``/var/lib/devdock-gateway``), for
        the ``known_hosts`` line on ``/hub/ssh``. Empty: the page shows no line for the gateway.
        """,
    )

    @property
    def ssh_via_gateway(self) -> bool:
        return self.ssh_enabled and self.ssh_mode in ("gateway", "both")

    @property
    def ssh_via_port(self) -> bool:
        return self.ssh_enabled and self.ssh_mode in ("ports", "both")

    @property
    def ssh_gateway_target(self) -> str:
        """What the gateway's forced command is told: ``user`` or ``user/server``, percent-encoded."""
        target = quote(self.user.name, safe="")
        return f"{target}/{quote(self.name, safe='')}" if self.name else target

    @property
    def ssh_gateway_alias(self) -> str:
        """The name of this server in the user's ``~/.ssh/config`` (and its ``known_hosts`` line)."""
        return f"devdock-{self.server_slug}" if self.name else "devdock"

    def ssh_gateway_config(self) -> str:
        """This server's block for ``~/.ssh/config``: the user's own ssh, relayed by the gateway.

        ssh expands ``%`` tokens in ``ProxyCommand`` (``%h``, ``%p``, ...), and the percent-encoded target of
        ``alice@example.org`` is ``alice%40example.org``: written ``%%`` there, ssh passes a ``%`` on.
        """
        return (
            f"Host {self.ssh_gateway_alias}\n"
            f"    User {self.login_name}\n"
            f"    HostKeyAlias {self.ssh_gateway_alias}\n"
            f"    ProxyCommand ssh -T devdock-gateway {ssh_config_escape(self.ssh_gateway_target)}\n"
        )

    def ssh_gateway_block(self) -> str:
        """The gateway's own block for ``~/.ssh/config`` (one per hub)."""
        return (
            "Host devdock-gateway\n"
            f"    HostName {ssh_config_escape(self.ssh_gateway_host)}\n"
            f"    Port {self.ssh_gateway_port}\n"
            "    User devdock\n"
        )

    def ssh_gateway_host_key(self) -> str:
        """The gateway's public host key line, or ``""``."""
        if not self.ssh_gateway_host_key_file:
            return ""
        try:
            with open(self.ssh_gateway_host_key_file, encoding="ascii", errors="replace") as f:
                line = f.read(4096).strip()
        except OSError:
            return ""
        return line if fingerprint(line) else ""

    ssh_keys_dir = Unicode(
        config=True,
        help="""
        Folder where the hub keeps each user's SSH public keys (one file per user, written only by the
        user's own ``/hub/ssh`` page). Default: ``ssh-keys`` in the hub's working directory.
        """,
    )

    @default("ssh_keys_dir")
    def _default_ssh_keys_dir(self):
        return os.path.abspath("ssh-keys")

    ssh_probe_host_ports = Bool(
        True,
        config=True,
        help="""
        Before handing out an SSH port, check with a local ``bind()`` that no host program listens
        on it. Meaningful when the hub runs on the host; with the hub in a container the check sees
        only the container, so set False there (Docker's own bind error still moves on to the next
        port). Default: True for containers; False for Swarm services (``object_type``), whose ports are
        published on the cluster's nodes, not necessarily where the hub runs.
        """,
    )

    @default("ssh_probe_host_ports")
    def _default_ssh_probe_host_ports(self):
        return self.object_type == "container"

    ssh_tcp_forwarding = CaselessStrEnum(
        ["no", "local", "remote", "yes"],
        "local",
        config=True,
        help="""
        sshd ``AllowTcpForwarding``. ``local`` (the default) is what VS Code Remote-SSH and
        ``ssh -L`` need; ``no`` forbids forwarding; ``remote``/``yes`` also allow ``ssh -R``.
        """,
    )

    ssh_x11_forwarding = Bool(False, config=True, help="Allow ``ssh -X``. Default: False.")

    ssh_agent_forwarding = Bool(False, config=True, help="Allow ``ssh -A``. Default: False.")

    @validate("ssh_port_range")
    def _validate_ssh_port_range(self, proposal):
        start, end = proposal.value
        if not 1024 <= start <= end <= 65535:
            raise ValueError(f"ssh_port_range must be two ports 1024 <= start <= end <= 65535, not {proposal.value}")
        return proposal.value

    #: The host SSH port of this server (kept in state across stops; 0: none yet).
    ssh_port = Int(0).tag(state="server")

    @property
    def port_allocator(self) -> PortAllocator:
        """The hub's allocator of this server's port range (one per range for the whole hub)."""
        return self.devdock_hub.port_allocator(self.ssh_port_range)

    @property
    def ssh_connect_host(self) -> str:
        """The host users connect to (on Swarm: the node the server runs on)."""
        return self.ssh_host

    @property
    def ssh_endpoint(self) -> tuple[str, int] | None:
        return (self.ssh_connect_host, self.ssh_port) if self.ssh_via_port and self.ssh_port else None

    @property
    def ssh_command(self) -> str:
        """The line users paste into a terminal."""
        return f"ssh -p {self.ssh_port} {self.login_name}@{self.ssh_connect_host}"

    #: The server's SSH host key (a public key line), read from the container after its start and kept while
    #: stopped (it lives in the home): /hub/ssh shows its fingerprint and known_hosts line.
    ssh_host_key = Unicode("").tag(state="server")

    async def read_ssh_host_key(self) -> str:
        """The host public key the server's sshd presents, read through the Docker API ("" if unavailable)."""
        path = f"/home/{self.login_name}/.config/devdock/ssh/ssh_host_ed25519_key.pub"
        try:
            stream, stat = await self.docker("get_archive", await self._local_container_id(), path)
            if stat.get("size", 0) > 4096 or not stat.get("mode", 0) & 0o777 or stat.get("linkTarget"):
                return ""  # not a plain, small key file (the user may have replaced it): show nothing
            data = b"".join(stream)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.next()
                text = tar.extractfile(member).read(4096).decode("ascii", "replace") if member.isfile() else ""
        except Exception as e:  # noqa: BLE001 - the key is a convenience: never fail a start for it
            self.log.info("No SSH host key for %s yet: %s", self._log_name, e)
            return ""
        return text.strip() if fingerprint(text.strip()) else ""

    async def allocate_ssh_port(self) -> int:
        """This server's SSH port, with one Docker API call in the steady state (see ports.held_ports)."""
        held = await self.devdock_hub.held_host_ports()
        try:
            port = self.port_allocator.allocate(self.server_key, held, preferred=self.ssh_port or None)
        except NoFreePort as e:
            raise web.HTTPError(503, str(e)) from e
        if port != self.ssh_port and self.ssh_port:
            self.log.warning("SSH port of %s moved from %s to %s", self._log_name, self.ssh_port, port)
        self.ssh_port = port
        return port

    async def push_ssh_keys(self, keys: list) -> bool:
        """Replace the keys in the running container at once (root-owned file, read by sshd).

        Returns False when the keys could not reach the running server (on Swarm, a container on another node):
        they apply at its next start, and the SSH page says so.
        """
        container = await self._local_container_id()
        if not container:
            return False
        try:
            await self.write_authorized_keys(container, keys)
        except APIError as e:
            if e.status_code != 404:
                raise
            self.log.info("%s runs out of the hub engine's reach; its new SSH keys apply at its next start",
                          self._log_name)  # fmt: skip
            return False
        return True

    async def _local_container_id(self) -> str:
        """The running server's container on the hub's engine ("" when there is none to reach)."""
        return self.container_id

    async def write_authorized_keys(self, container_id: str, keys: list) -> None:
        """Write ``keys`` as the container's authorized_keys (a tar archive through the Docker API)."""
        data = "".join(key.line() + "\n" for key in keys).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("authorized_keys")
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, 0, 0
            tar.addfile(info, io.BytesIO(data))
        await self.docker("put_archive", container_id, "/etc/devdock/ssh", buf.getvalue())

    def key_store(self) -> KeyStore:
        """The hub's SSH key files; keys change only through their owner's ``/hub/ssh`` page (and offboarding),
        and every change reaches the hub's index of them, which the gateway's lookups read."""
        return KeyStore(self.ssh_keys_dir, legacy_shared=self._legacy_slug_shared, index=key_index(self.ssh_keys_dir))

    def _legacy_slug_shared(self, username: str) -> bool:
        """Whether another hub user had ``username``'s pre-0.2 slug (then its old key file is nobody's)."""
        return self.devdock_hub.legacy_slug_shared(username)

    def ssh_keys_for_spawn(self) -> list:
        """The keys the user keeps on the hub. Never from ``user_options``: whoever may only start a server
        (a course tool, a culler) must not be able to add a key to it, and a key its owner removed must stay
        removed when JupyterHub re-uses the options of an earlier start."""
        return self.key_store().load(self.user.name)

    def get_env(self):
        env = super().get_env()
        env.update(self.ssh_environment())
        return env

    def ssh_environment(self) -> dict:
        """What the image's entrypoint needs to set up sshd for this spawn."""
        if not self.ssh_enabled:
            return {"DEVDOCK_SSH": "0"}
        return {
            "DEVDOCK_SSH": "1",
            "DEVDOCK_SSH_AUTHORIZED_KEYS": "\n".join(key.line() for key in self._ssh_keys),
            "DEVDOCK_SSH_TCP_FORWARDING": self.ssh_tcp_forwarding,
            "DEVDOCK_SSH_X11_FORWARDING": "yes" if self.ssh_x11_forwarding else "no",
            "DEVDOCK_SSH_AGENT_FORWARDING": "yes" if self.ssh_agent_forwarding else "no",
        }

    _ssh_keys: list = []

    def ssh_labels(self) -> dict:
        """The server's SSH port on its container: a restarted hub (and every allocation) sees who holds it."""
        return {SSH_PORT_LABEL: str(self.ssh_port)} if self.ssh_via_port and self.ssh_port else {}

    def _ssh_progress_message(self) -> str:
        if not self.ssh_via_port:
            return f"SSH: ssh {self.ssh_gateway_alias} (through the gateway; your ~/.ssh/config block is on /hub/ssh)"
        return f"SSH: {self.ssh_command}"

    def load_state(self, state):
        super().load_state(state)
        self._forget_stored_ssh_keys()

    def _forget_stored_ssh_keys(self) -> None:
        """Drop ``ssh_keys`` from the options JupyterHub stored for this server (devdock before 0.2 took keys there).

        JupyterHub re-uses the stored options when a start sends none; keys now come only from ``/hub/ssh``,
        and a start that sends keys is refused, so stored ones must not make every later start fail.
        """
        stored = getattr(self.orm_spawner, "user_options", None)
        if isinstance(stored, dict) and "ssh_keys" in stored:
            self.log.info(
                "Removing ssh_keys from the stored spawn options of %s (keys live on /hub/ssh)", self._log_name
            )
            self.orm_spawner.user_options = {k: v for k, v in stored.items() if k != "ssh_keys"}
            if self.devdock_hub.db is not None:
                self.devdock_hub.db.commit()

    async def start_object(self):
        """Start the Docker object; if Docker cannot bind the SSH port after all, move to the next one."""
        for attempt in range(3):
            try:
                return await super().start_object()
            except APIError as e:
                message = str(e.explanation or e)
                if not (self.ssh_via_port and self.ssh_port and port_taken(message)) or attempt == 2:
                    raise
                await self.recreate_with_new_ssh_port(message)

    async def recreate_with_new_ssh_port(self, problem: str) -> None:
        """The engine could not bind the SSH port after all (something outside devdock holds it): never try
        that port again, take the next one, and make the object again."""
        self.log.warning("SSH port %s of %s is taken outside devdock: %s", self.ssh_port, self._log_name, problem)
        self.port_allocator.mark_unusable(self.ssh_port)
        await self.allocate_ssh_port()
        await self.recreate_object()

    async def delete_forever_part(self, erase: bool, requester: str) -> None:
        """The server is deleted for good (its home first): its port goes back to the pool, and with the default
        server (which goes only with its user) the user's key file goes too."""
        await super().delete_forever_part(erase, requester)
        if not self.name:
            for path in self.key_store().delete(self.user.name):
                self.log.info("devdock: removed the SSH keys of deleted user %s (%s)", self.user.name, path)
        self.port_allocator.release(self.server_key)
        self.ssh_port, self.ssh_host_key = 0, ""


def ssh_config_escape(value: str) -> str:
    """``value`` for an ``ssh_config`` keyword that expands ``%`` tokens (ProxyCommand, HostName, ...)."""
    return value.replace("%", "%%")

"""SSH host ports: stable per user and server, race-free, one Docker API call per allocation.

The tool devdock replaces scanned upward from 1024, doing a TCP connect plus an inspection of every
container for each candidate port: quadratic in containers, and two users starting at once could get
the same port. Here:

- every ``(user, server)`` key has a *home* port, the same on every hub (a hash of the key into the
  range), and keeps whatever port it got last (spawner state, and the ``io.devdock.ssh-port`` label on
  its container), so ``ssh -p`` lines in people's ``~/.ssh/config`` keep working;
- ports in use are learned from one ``docker ps -a`` (:func:`held_ports`; other tools' stopped containers
  are inspected once each, ever) plus the allocator's own reservations, and host sockets from a local
  ``bind()`` test (no traffic);
- allocation holds a lock, so concurrent spawns never get the same port;
- a port Docker still refuses to bind (a race with something outside devdock) is marked bad and the
  next one is taken (:meth:`PortAllocator.mark_unusable`).

The allocator is pure apart from the optional host-socket probe, so it is tested from tables.
"""

from __future__ import annotations

import errno
import hashlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable

from .naming import OWNER_LABEL, server_key_from_labels


class NoFreePort(RuntimeError):
    """The configured range has no free port left."""


def host_port_free(address: str, port: int) -> bool:
    """True if nothing on this host listens on ``port`` (a bind test: nothing is sent anywhere)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address or "0.0.0.0", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def ports_from_containers(containers: Iterable[dict], label: str) -> dict[int, str | None]:
    """Host ports held by containers, from one ``docker ps -a`` listing (``APIClient.containers(all=True)``).

    Returns ``{port: key or None}``: the key (from devdock's labels) for devdock's own containers,
    running or stopped; None for any other container's published ports (Docker lists published ports
    of running containers only).
    """
    held: dict[int, str | None] = {}
    for c in containers:
        labels = c.get("Labels") or {}
        key = server_key_from_labels(labels)
        if labels.get(label, "").isdigit():
            held[int(labels[label])] = key
        for p in c.get("Ports") or []:
            if p.get("PublicPort"):
                held.setdefault(int(p["PublicPort"]), key)
    return held


def bindings_from_inspect(info: dict) -> set[int]:
    """Host ports a container reserves (``docker inspect``), whether or not it is running."""
    ports = set()
    for bindings in ((info.get("HostConfig") or {}).get("PortBindings") or {}).values():
        for binding in bindings or []:
            if str(binding.get("HostPort") or "").isdigit():
                ports.add(int(binding["HostPort"]))
    return ports


async def held_ports(docker: Callable[..., Awaitable], label: str, cache: dict[str, set[int]]) -> dict[int, str | None]:
    """Every host port reserved on the engine, in one API call in the steady state.

    One ``docker ps -a`` gives devdock's own containers (by label, running or stopped) and the
    published ports of running containers. Stopped containers of other tools reserve ports too, but
    the listing omits them: those are inspected once each and remembered in ``cache`` (a container's
    port bindings never change after it is created), so they cost one call per container, ever.
    """
    containers = await docker("containers", all=True)
    held = ports_from_containers(containers, label)
    seen = set()
    for c in containers:
        labels = c.get("Labels") or {}
        if OWNER_LABEL in labels or c.get("State") == "running":
            continue
        seen.add(c["Id"])
        if c["Id"] not in cache:
            try:
                cache[c["Id"]] = bindings_from_inspect(await docker("inspect_container", c["Id"]))
            except Exception:  # noqa: BLE001 - removed in the meantime: it holds nothing
                cache[c["Id"]] = set()
        for port in cache[c["Id"]]:
            held.setdefault(port, None)
    for gone in set(cache) - seen:
        del cache[gone]
    return held


class PortAllocator:
    """Hands out host ports from ``[start, end]``, one per key, under a lock."""

    def __init__(self, start: int, end: int, probe: Callable[[int], bool] | None = None):
        if not 1 <= start <= end <= 65535:
            raise ValueError(f"invalid port range {start}-{end}")
        self.start, self.end = start, end
        self.size = end - start + 1
        self.probe = probe
        self._lock = threading.Lock()
        self._by_key: dict[str, int] = {}
        self._by_port: dict[int, str] = {}
        self._unusable: set[int] = set()

    def home_port(self, key: str) -> int:
        """Where the search for ``key`` starts: the same on every hub, spread over the range."""
        digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        return self.start + digest % self.size

    def reserved(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_key)

    def remember(self, key: str, port: int) -> None:
        """Record a port ``key`` already has (from spawner state or its container), if still unclaimed."""
        with self._lock:
            if self.start <= port <= self.end and port not in self._by_port and key not in self._by_key:
                self._claim(key, port)

    def allocate(self, key: str, held: dict[int, str | None] | None = None, preferred: int | None = None) -> int:
        """The port for ``key``: its current one if still usable, else the first free one after its home.

        ``held`` is what Docker says is in use (see :func:`ports_from_containers`); a port held by
        ``key``'s own container counts as free for ``key``.
        """
        held = held or {}
        with self._lock:
            for candidate in (self._by_key.get(key), preferred):
                if candidate is not None and self._usable(candidate, key, held):
                    return self._claim(key, candidate)
            home = self.home_port(key)
            for offset in range(self.size):
                port = self.start + (home - self.start + offset) % self.size
                if self._usable(port, key, held):
                    return self._claim(key, port)
        raise NoFreePort(
            f"No free SSH port left in {self.start}-{self.end}: every port is taken by a server or another "
            "program. An admin can widen c.DevDockSpawner.ssh_port_range."
        )

    def release(self, key: str) -> None:
        """Forget ``key``'s port (its server is deleted for good; a plain stop keeps the port)."""
        with self._lock:
            port = self._by_key.pop(key, None)
            if port is not None:
                self._by_port.pop(port, None)

    def mark_unusable(self, port: int) -> None:
        """Docker could not bind ``port``: never hand it out again (until the hub restarts)."""
        with self._lock:
            self._unusable.add(port)
            key = self._by_port.pop(port, None)
            if key is not None and self._by_key.get(key) == port:
                del self._by_key[key]

    # --- internals (called with the lock held) ----------------------------------------------

    def _usable(self, port: int, key: str, held: dict[int, str | None]) -> bool:
        if not self.start <= port <= self.end or port in self._unusable:
            return False
        owner = self._by_port.get(port)
        if owner is not None and owner != key:
            return False
        if port in held:
            return held[port] == key
        # Our own port whose container is gone: free again as far as Docker knows; check the host.
        return self.probe is None or self.probe(port)

    def _claim(self, key: str, port: int) -> int:
        old = self._by_key.get(key)
        if old is not None and old != port:
            self._by_port.pop(old, None)
        self._by_key[key] = port
        self._by_port[port] = key
        return port


def port_taken(message: str) -> bool:
    """Whether the engine's error says a published port is already bound (by something devdock cannot see).

    Docker says "port is already allocated" (its own proxy) or "address already in use" (the kernel); Swarm's
    tasks carry the same words in their status.
    """
    message = message.lower()
    return "port is already" in message or "address already in use" in message

"""Reconciliation: what a hub does with its containers (or services) that its database does not list as running.

Pure: the spawner gathers the objects and the database's running servers, this module decides.

A hub finds such objects after a crash in the middle of a spawn, but also when its database is new, empty or
restored from an older backup, while users' servers kept running. Removing a running server would end its
user's work (their processes, their unsaved files), so by default devdock never does: a running object the
database does not know is **kept**, its GPUs and SSH port stay held (nobody is handed them twice), the hub's
log and the admin page list it, and its user's next start replaces it (their home is a volume). An object
that does not run any more (created, exited, dead) holds nothing worth keeping and is removed. A site that
prefers the old way, removing every unknown object, sets ``unknown_servers = "remove"``.
"""

from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("keep", "remove")


@dataclass(frozen=True)
class Found:
    """One container or service of this hub, as the engine lists it."""

    id: str
    name: str
    #: ``user/server`` from its labels
    key: str
    running: bool
    gpus: tuple[str, ...] = ()
    ssh_port: int = 0


@dataclass(frozen=True)
class Plan:
    remove: tuple[Found, ...]
    keep_unknown: tuple[Found, ...]


def plan(found: list[Found], running_keys: set[str] | None, policy: str = "keep") -> Plan:
    """Which objects to remove and which to keep although the database does not know them.

    ``running_keys``: the ``user/server`` keys the database has as running; None when there is no database to
    ask (then nothing is touched).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown_servers must be one of {POLICIES}, not {policy!r}")
    if running_keys is None:
        return Plan((), ())
    unknown = [f for f in found if f.key not in running_keys]
    if policy == "remove":
        return Plan(tuple(unknown), ())
    return Plan(tuple(f for f in unknown if not f.running), tuple(f for f in unknown if f.running))


def container_found(container: dict, key: str, gpu_label: str, port_label: str) -> Found:
    """A ``docker ps -a`` entry as :class:`Found`."""
    labels = container.get("Labels") or {}
    names = container.get("Names") or [""]
    port = labels.get(port_label, "")
    return Found(
        id=container["Id"],
        name=names[0].lstrip("/"),
        key=key,
        running=container.get("State") == "running",
        gpus=tuple(u for u in labels.get(gpu_label, "").split(",") if u),
        ssh_port=int(port) if port.isdigit() else 0,
    )

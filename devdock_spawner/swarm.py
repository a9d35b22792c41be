"""A user's server as a Docker Swarm service (pure: no Docker calls, no traitlets).

``service_spec`` turns the same :class:`~devdock_spawner.container.ContainerSettings` that a single
engine gets into the arguments of docker-py's ``create_service``: one replica, never restarted by
Swarm (the hub decides), with the same capabilities, limits, labels and home. The rest reads what
Swarm reports back: a task's address on the users' network, its node, the GPUs the scheduler picked
for it, and every published port of the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .container import (
    ENTRYPOINT_CAPABILITIES,
    PRIVILEGED_PORTS,
    ContainerSettings,
    UnsafeConfiguration,
    check_capabilities,
    check_loader_environment,
    check_sysctls,
    deep_merge,
    host_path_problem,
    mount_sources,
)
from .naming import server_key_from_labels
from .ports import port_taken

#: How the SSH port is published: on every node (Swarm's routing mesh) or on the task's node only.
PUBLISH_MODES = ("ingress", "host")
#: Task states on the way to "running"; anything else (failed, rejected, complete, shutdown) is an end.
STARTING_STATES = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
#: Where a task's error says the scheduler found no node with enough resources for it.
NO_NODE = "no suitable node"
#: Swarm's constraint enforcer rejects tasks holding named generic resources whenever their node is
#: updated (a label change, the node's first attachment to an overlay network): an upstream bug.
ENFORCER_REJECTED = "assigned node no longer meets constraints"

_CONSTRAINT = re.compile(r"^(node|engine)\.[A-Za-z0-9_.\-]+\s*(==|!=)\s*[A-Za-z0-9_.\-:/@ ]+$")


@dataclass
class SwarmSettings:
    """What a service needs beyond a container's settings."""

    #: placement constraints, e.g. ``node.labels.gpu-model == a100``
    constraints: list[str] = field(default_factory=list)
    #: generic resource kind of GPUs (``NVIDIA-GPU``) and how many this server reserves
    gpu_kind: str = "NVIDIA-GPU"
    gpus: int = 0
    #: ``ingress`` or ``host`` (see :data:`PUBLISH_MODES`)
    publish_mode: str = "host"
    #: volume driver for the home volume (``local`` with NFS options, or a plugin); empty: the node's default
    volume_driver: str = ""
    volume_driver_options: dict = field(default_factory=dict)
    #: labels of the home volume, written by whichever node creates it
    volume_labels: dict = field(default_factory=dict)
    extra_task_spec: dict = field(default_factory=dict)


def check_constraint(constraint: str) -> str:
    """A placement constraint in Swarm's syntax, or a ValueError that says what is wrong."""
    if not isinstance(constraint, str) or not _CONSTRAINT.match(constraint.strip()):
        raise ValueError(
            f"placement constraint {constraint!r} must look like 'node.labels.gpu == a100' or "
            "'node.hostname != gpu03' (node.* or engine.* attribute, == or !=, a value)"
        )
    return constraint.strip()


def _size_bytes(size: str | int | None) -> int | None:
    """Docker's sizes (``512m``, ``2g``) in bytes."""
    if size is None or size == "":
        return None
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"(\d+)\s*([kmgt]?)b?", str(size).strip().lower())
    if not match:
        raise ValueError(f"cannot read the size {size!r} (examples: 512m, 2g)")
    return int(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")


def _mounts(s: ContainerSettings, w: SwarmSettings) -> list[dict]:
    mounts = []
    for source, bind in s.binds.items():
        read_only = "ro" in str(bind.get("mode", "rw")).split(",")
        mount = {"Target": bind["bind"], "Source": source, "ReadOnly": read_only}
        if "/" in source:
            mount["Type"] = "bind"
        else:
            mount["Type"] = "volume"
            options: dict = {"Labels": dict(w.volume_labels)}
            if w.volume_driver:
                options["DriverConfig"] = {"Name": w.volume_driver, "Options": dict(w.volume_driver_options)}
            mount["VolumeOptions"] = options
        mounts.append(mount)
    mounts.extend(dict(m) for m in s.mounts)
    shm = _size_bytes(s.shm_size)
    if shm:
        # Services have no shm_size: a tmpfs on /dev/shm is what it does on one engine.
        mounts.append({"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": shm}})
    return mounts


def check_service_spec(task_template: dict) -> None:
    """Refuse what would undo devdock's guarantees (the service twin of ``check_host_config``)."""
    container = task_template.get("ContainerSpec", {})
    for source, _ in mount_sources(container.get("Mounts")):
        problem = host_path_problem(source)
        if problem:
            raise UnsafeConfiguration(f"devdock refuses to mount {source!r} (extra_task_spec Mounts): {problem}")
    for key, why in (("User", "the image's entrypoint drops root itself"), ("Command", "it replaces the entrypoint")):
        if container.get(key):
            raise UnsafeConfiguration(f"devdock refuses extra_task_spec ContainerSpec.{key}: {why}")
    check_capabilities(
        container.get("CapabilityAdd"), container.get("CapabilityDrop"), "extra_task_spec", "CapabilityDrop"
    )
    check_sysctls(container.get("Sysctls") or {}, "extra_task_spec")
    privileges = container.get("Privileges") or {}
    if privileges.get("NoNewPrivileges") is False:
        raise UnsafeConfiguration("devdock refuses extra_task_spec Privileges.NoNewPrivileges=false")
    for kind in ("Seccomp", "AppArmor"):
        if str((privileges.get(kind) or {}).get("Mode", "default")).lower() != "default":
            raise UnsafeConfiguration(
                f"devdock refuses extra_task_spec Privileges.{kind}: confinement stays on, with Docker's default "
                "profile"
            )
    for network in task_template.get("Networks") or []:
        if str(network.get("Target", "")).lower() in ("host", "bridge"):
            raise UnsafeConfiguration(f"devdock refuses extra_task_spec network {network.get('Target')!r}")
    if (task_template.get("Resources") or {}).get("Reservations", {}).get("Devices"):
        raise UnsafeConfiguration("devdock refuses extra_task_spec device reservations: GPUs come from profiles")


def service_spec(s: ContainerSettings, w: SwarmSettings) -> dict:
    """``create_service`` keyword arguments for one user's server: one task, never restarted by Swarm."""
    if s.device_requests or s.devices:
        raise ValueError("Swarm services take GPUs as generic resources, not device requests")
    if w.publish_mode not in PUBLISH_MODES:
        raise ValueError(f"publish mode must be one of {PUBLISH_MODES}, not {w.publish_mode!r}")
    container = {
        "Image": s.image,
        "Args": list(s.command),
        "Hostname": s.hostname,
        "Env": [f"{k}={v}" for k, v in s.environment.items()],
        "Labels": dict(s.labels),
        "Mounts": _mounts(s, w),
        "CapabilityDrop": ["ALL"],
        "CapabilityAdd": [f"CAP_{c}" for c in ENTRYPOINT_CAPABILITIES],
        "Sysctls": dict(PRIVILEGED_PORTS),
        "Init": False,  # the image runs tini as PID 1
    }
    if s.stop_timeout is not None:
        container["StopGracePeriod"] = int(s.stop_timeout * 1e9)
    limits: dict = {}
    if s.cpu_limit:
        limits["NanoCPUs"] = int(s.cpu_limit * 1e9)
    if s.mem_limit:
        limits["MemoryBytes"] = int(s.mem_limit)
    if s.pids_limit:
        limits["Pids"] = int(s.pids_limit)
    resources: dict = {"Limits": limits}
    if w.gpus:
        resources["Reservations"] = {
            "GenericResources": [{"DiscreteResourceSpec": {"Kind": w.gpu_kind, "Value": int(w.gpus)}}]
        }
    task = {
        "ContainerSpec": container,
        "Resources": resources,
        # A server that exits stays down, as on one engine: the hub notices and the user starts again.
        "RestartPolicy": {"Condition": "none"},
        "Placement": {"Constraints": [check_constraint(c) for c in w.constraints]},
        "Networks": [{"Target": s.network}],
    }
    task = deep_merge(task, w.extra_task_spec)
    check_service_spec(task)
    check_loader_environment(task["ContainerSpec"].get("Env"), s.loader_environment)
    ports = [
        {
            "Protocol": "tcp",
            "TargetPort": int(container_port.split("/")[0]),
            "PublishedPort": int(host_port),
            "PublishMode": w.publish_mode,
        }
        for container_port, (_, host_port) in s.published.items()
    ]
    # DNS round robin needs no virtual IP (no IPVS in the kernel); Swarm's routing mesh needs a VIP.
    mode = "vip" if ports and w.publish_mode == "ingress" else "dnsrr"
    return {
        "name": s.name,
        "labels": dict(s.labels),
        "task_template": task,
        "endpoint_spec": {"Mode": mode, "Ports": ports},
    }


def keeper_spec(name: str, image: str, network: str, labels: dict) -> dict:
    """``create_service`` arguments of the network keeper: one idle task per node, on ``network``."""
    container = {
        "Image": image,
        "Command": ["sleep", "infinity"],
        "Labels": dict(labels),
        "CapabilityDrop": ["ALL"],
        "StopGracePeriod": 1_000_000_000,
    }
    return {
        "name": name,
        "labels": dict(labels),
        "mode": {"Global": {}},
        "task_template": {
            "ContainerSpec": container,
            "Resources": {"Limits": {"MemoryBytes": 16 * 1024 * 1024, "Pids": 8}},
            # Kept running, but without a tight loop on a node that lacks the image.
            "RestartPolicy": {"Condition": "any", "Delay": 10_000_000_000},
            "Networks": [{"Target": network}],
        },
        "endpoint_spec": {"Mode": "dnsrr"},
    }


# --- what Swarm reports -------------------------------------------------------------------------


def task_address(task: dict, network: str) -> str | None:
    """The task's IP address on ``network`` (the hub and proxy reach it there), or None."""
    for attachment in task.get("NetworksAttachments") or []:
        if attachment.get("Network", {}).get("Spec", {}).get("Name") == network:
            for address in attachment.get("Addresses") or []:
                return address.split("/")[0]
    return None


def task_generic_resources(task: dict, kind: str) -> list[str]:
    """The named resources of ``kind`` (GPU ids) the scheduler gave this task.

    The Engine API documents them as ``AssignedGenericResources``; Docker 20.10 and later send ``GenericResources``.
    """
    ids = []
    for resource in task.get("AssignedGenericResources") or task.get("GenericResources") or []:
        named = resource.get("NamedResourceSpec")
        if named and named.get("Kind") == kind:
            ids.append(str(named["Value"]))
    return sorted(ids)


def node_generic_resources(node: dict, kind: str) -> list[str]:
    """The named resources of ``kind`` a node advertises (``node-generic-resources`` in its daemon.json)."""
    ids = []
    for resource in node.get("Description", {}).get("Resources", {}).get("GenericResources") or []:
        named = resource.get("NamedResourceSpec")
        if named and named.get("Kind") == kind:
            ids.append(str(named["Value"]))
        discrete = resource.get("DiscreteResourceSpec")
        if discrete and discrete.get("Kind") == kind:
            # Counted, not named: Swarm cannot say which device a task got.
            ids.extend(f"{node.get('ID', '')[:12]}-{kind}-{i}" for i in range(int(discrete.get("Value", 0))))
    return ids


def task_gpu_count(task: dict, kind: str) -> int:
    """How many GPUs of ``kind`` a task holds, named or counted."""
    count = 0
    for resource in task.get("AssignedGenericResources") or task.get("GenericResources") or []:
        if (resource.get("NamedResourceSpec") or {}).get("Kind") == kind:
            count += 1
        discrete = resource.get("DiscreteResourceSpec") or {}
        if discrete.get("Kind") == kind:
            count += int(discrete.get("Value", 0))
    return count


def owner_held_gpus(tasks: list[dict], kind: str, key: str) -> int:
    """How many GPUs of ``kind`` the other servers of ``key``'s owner hold, from the cluster's running tasks."""
    owner = key.rpartition("/")[0]
    held = 0
    for task in tasks:
        if task.get("DesiredState") not in ("running", "ready", None):
            continue
        other = server_key_from_labels(task.get("Spec", {}).get("ContainerSpec", {}).get("Labels"))
        if other is not None and other != key and other.rpartition("/")[0] == owner:
            held += task_gpu_count(task, kind)
    return held


@dataclass
class NodeGPUs:
    node_id: str
    hostname: str
    ids: list[str]
    held: list[str]

    @property
    def free(self) -> int:
        return len(self.ids) - len(self.held)


def gpus_by_node(nodes: list[dict], tasks: list[dict], kind: str) -> dict[str, NodeGPUs]:
    """The GPUs of every ready, active node and those its running tasks hold (counted GPUs get made-up ids)."""
    view = {}
    for node in nodes:
        if node_usable(node):
            ids = node_generic_resources(node, kind)
            view[node["ID"]] = NodeGPUs(node["ID"], node.get("Description", {}).get("Hostname", ""), ids, [])
    for task in tasks:
        entry = view.get(task.get("NodeID", ""))
        if entry is None or task.get("DesiredState") not in ("running", "ready", None):
            continue
        named = [i for i in task_generic_resources(task, kind) if i in entry.ids and i not in entry.held]
        counted = task_gpu_count(task, kind) - len(task_generic_resources(task, kind))
        spare = [i for i in entry.ids if i not in entry.held and i not in named]
        entry.held.extend(named + spare[: max(0, counted)])
    return view


def node_ssh_host(node: dict, label: str) -> str:
    """Where users reach a node: its ``label`` (e.g. ``devdock.ssh-host``) if set, else Swarm's address."""
    labels = node.get("Spec", {}).get("Labels") or {}
    return labels.get(label) or node.get("Status", {}).get("Addr") or node.get("Description", {}).get("Hostname", "")


def node_usable(node: dict) -> bool:
    return node.get("Status", {}).get("State") == "ready" and node.get("Spec", {}).get("Availability") == "active"


def held_service_ports(services: list[dict]) -> dict[int, str | None]:
    """Every published port of the cluster, from one ``docker service ls``: {port: owner key or None}.

    A port of one of devdock's services maps to its ``user/server`` key (so that it stays that server's),
    any other service's port to None (taken).
    """
    held: dict[int, str | None] = {}
    for service in services:
        key = service_key(service)
        ports = (
            (service.get("Endpoint") or {}).get("Ports")
            or (service.get("Spec", {}).get("EndpointSpec") or {}).get("Ports")
            or []
        )
        for port in ports:
            if port.get("PublishedPort"):
                held.setdefault(int(port["PublishedPort"]), key)
    return held


def task_problem(task: dict) -> str:
    """Swarm's own words on why a task is not running (empty if it says nothing)."""
    status = task.get("Status") or {}
    return status.get("Err") or status.get("Message") or ""


def service_key(service: dict) -> str | None:
    """``user/server`` of one of devdock's services (from its labels), None for anyone else's."""
    return server_key_from_labels(service.get("Spec", {}).get("Labels"))


def gpu_refusal(view: dict[str, NodeGPUs], wanted: int, home_node: str | None = None, home_name: str = "") -> str:
    """Why a server that needs ``wanted`` GPUs on one node cannot start now ("" if one node can take it).

    ``view`` is :func:`gpus_by_node`; ``home_node`` the node a pinned home ties the server to (None: any).
    The scheduler picks the GPUs; this only says, before anything is created, when it could not.
    """
    if not wanted:
        return ""
    if home_node is not None:
        entry = view.get(home_node)
        if entry is None or len(entry.ids) < wanted:
            return (
                f"Your home is on node {home_name}, which has {len(entry.ids) if entry else 0} GPUs, and this "
                f"profile needs {wanted}. Choose a profile without GPUs, or ask an admin to move your home to a "
                "GPU node (or to share homes across nodes)."
            )
        if entry.free < wanted:
            return (
                f"Not enough free GPUs on node {home_name}, where your home is: {entry.free} of {len(entry.ids)} "
                f"free, {wanted} needed. Try again later or choose a profile with fewer GPUs."
            )
        return ""
    total = sum(len(e.ids) for e in view.values())
    best = max((e.free for e in view.values()), default=0)
    if total == 0:
        return "The cluster has no GPUs to hand out. Choose a profile without GPUs."
    if best < wanted:
        free = sum(e.free for e in view.values())
        return (
            f"Not enough free GPUs right now: this profile needs {wanted} on one node, and the most free on any "
            f"node is {best} ({free} of {total} free in the cluster). Try again later or choose a profile with "
            "fewer GPUs."
        )
    return ""


#: What the spawner does next while it waits for a service's task (:func:`start_step`).
RUNNING, WAIT, NO_NODE_FAIL, RECREATE, NEW_SSH_PORT, GONE, FAILED = (
    "running", "wait", "no-node", "recreate", "new-ssh-port", "gone", "failed",
)  # fmt: skip

#: Seconds a task may stay "no suitable node" (a stopped server may still hold its GPUs) or missing.
NO_NODE_GRACE = 10
#: How often a rejected task is replaced (the constraint enforcer, a taken SSH port) before giving up.
MAX_REPLACEMENTS = 3


def start_step(task: dict | None, since_created: float, no_node_for: float, replaced: int, ssh_port: bool) -> str:
    """The next step while a service starts, from its newest task (pure; the spawner does the calls).

    ``since_created``: seconds since the service was (re)created; ``no_node_for``: seconds the task has been
    pending with no suitable node (0 when it is not); ``replaced``: replacements so far; ``ssh_port``: the
    server publishes an SSH port (so a port clash can be mended with another).
    """
    if task is None:
        return GONE if since_created > NO_NODE_GRACE else WAIT
    state = task.get("Status", {}).get("State", "new")
    problem = task_problem(task)
    if state == "running":
        return RUNNING
    if state in STARTING_STATES:
        if state == "pending" and NO_NODE in problem and no_node_for > NO_NODE_GRACE:
            return NO_NODE_FAIL
        return WAIT
    if replaced < MAX_REPLACEMENTS:
        if ENFORCER_REJECTED in problem:
            # Swarm's constraint enforcer drops tasks holding named generic resources when their node changes
            # (its first overlay attachment, a label): a new task is placed normally.
            return RECREATE
        if ssh_port and port_taken(problem):
            return NEW_SSH_PORT
    return FAILED


def task_poll(task: dict | None) -> int | str | None:
    """``poll()``'s answer from a service's newest task: None running (or starting), else why it is not."""
    if task is None:
        return 0
    state = task.get("Status", {}).get("State")
    if task.get("DesiredState") not in ("running", "ready", None):
        # Swarm is shutting it down (its node is gone or was drained): it will not serve again.
        return f"task {state}, Swarm wants it {task.get('DesiredState')}: {task_problem(task)}"
    if state == "running" or state in STARTING_STATES:
        return None
    return f"task {state}: {task_problem(task)}"

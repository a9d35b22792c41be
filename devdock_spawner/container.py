"""The Docker container a user gets, as plain dicts (pure: no Docker calls, no traitlets).

``container_spec`` turns a :class:`ContainerSettings` into the keyword arguments of docker-py's
``create_container`` and ``create_host_config``. The spawner fills the settings from its traits for
each spawn, so nothing here can leak from one spawn into the next.
"""

from __future__ import annotations

import copy
import ipaddress
import posixpath
from dataclasses import dataclass, field

from .naming import LABEL_PREFIX, MANAGED_LABEL

#: What the image's entrypoint needs while it is still root: give the user an account (useradd writes
#: /etc/passwd, chown the home), bind the SSH port (below 1024, see ``PRIVILEGED_PORTS``) and drop to that user
#: (setuid/setgid). Everything else is dropped, and after the entrypoint's ``setpriv`` none of the user's
#: processes holds any capability.
ENTRYPOINT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "NET_BIND_SERVICE")

#: Ports below this one need CAP_NET_BIND_SERVICE in the container (Docker lowers it to 0 by default). The
#: published SSH port is the container's 22, bound by the entrypoint: the user can never bind it themselves,
#: so the hub's host name never serves a listener of the user's choosing.
PRIVILEGED_PORTS = {"net.ipv4.ip_unprivileged_port_start": "1024"}

#: Namespace settings of host_config: the values that stay inside the container's own namespaces.
#: Anything else ("host", "container:<other>") shares a namespace with the host or another container.
NAMESPACE_MODES = {
    "pid_mode": ("", "private"),
    "ipc_mode": ("", "private", "none"),
    "uts_mode": ("", "private"),
    "userns_mode": ("", "private"),
    "cgroupns": ("", "private"),
}

#: host_config keys a site may not set at all: each one undoes a guarantee.
FORBIDDEN_HOST_CONFIG = {
    "privileged": "privileged containers can take over the host",
    "volumes_from": "it mounts another container's volumes (another user's home)",
    "device_cgroup_rules": "it lets the container open host devices beyond its GPUs",
    "links": "it opens traffic to another container, past the network's isolation",
    "publish_all_ports": "it publishes every port of the container on all of the host's addresses",
}


#: The environment that decides which GPUs a container sees (the NVIDIA runtime and CUDA read it): devdock's own,
#: from the allotment, whatever a site merges over the container's settings.
GPU_ENVIRONMENT = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "DEVDOCK_GPUS")

#: Host folders whose bind mount would hand a user the Docker socket (it lives in /var/run = /run).
_SOCKET_PARENTS = {"/", "/var", "/run", "/var/run", "/run/docker", "/var/run/docker"}

#: Host trees that control the host or other containers: the kernel's views of every process and device (/proc,
#: /sys, /dev), the sockets of the engine, containerd, systemd and D-Bus (/run), the engines' data (every volume,
#: so every other user's home, is under /var/lib/docker), boot files and root's home. A bind of one of them, of
#: anything inside one, or of a folder that holds one (``/``, ``/var``) is refused.
HOST_CONTROL_TREES = (
    "/proc", "/sys", "/dev", "/boot", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd",
    "/var/lib/kubelet", "/root",
)  # fmt: skip
#: Host folders refused whole (and the folders above them), while single files and folders inside stay allowed:
#: ``/etc/localtime`` or a CA bundle are common, read-only binds; the whole ``/etc`` is the host's accounts.
HOST_WHOLE_FOLDERS = ("/etc",)


def _host_path(source: str) -> str:
    text = str(source).strip()
    return posixpath.normpath("/" + text.lstrip("/")) if text else ""


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def exposes_docker_socket(source: str) -> bool:
    """Whether binding host path ``source`` into a container gives it the Docker socket."""
    path = _host_path(source)
    return path.endswith("docker.sock") or path in _SOCKET_PARENTS


def host_path_problem(source: str) -> str:
    """Why binding host path ``source`` into a user's container undoes the isolation (``""``: it does not)."""
    if exposes_docker_socket(source):
        return "it gives a user container the Docker socket"
    if not str(source).strip().startswith("/"):
        return ""  # a volume's name
    path = _host_path(source)
    for tree in HOST_CONTROL_TREES:
        if _inside(path, tree) or _inside(tree, path):
            return f"{tree} is the host's own (processes, devices, the engines' sockets and data, other users' homes)"
    for folder in HOST_WHOLE_FOLDERS:
        if _inside(folder, path):
            return f"{folder} is the host's configuration and accounts (bind single files from it, read-only)"
    return ""


#: Variables that make the dynamic loader or the C library load code or data from a path of the setter's choosing
#: before the first line of the image's entrypoint runs, as root with its capabilities (glibc ignores them in
#: setuid programs for the same reason): every ``LD_*`` (LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH...) and these.
LOADER_ENVIRONMENT = ("GCONV_PATH", "GLIBC_TUNABLES", "LOCPATH", "NLSPATH", "MALLOC_TRACE")

#: Container runtimes that isolate at least as well as Docker's default (runc): crun and youki are runc's twins,
#: ``nvidia`` is runc with NVIDIA's hook (which follows the GPU variables devdock checks), gVisor and Kata add a
#: kernel of their own. Any other runtime the engine knows decides the isolation by itself: refused.
RUNTIMES = (
    "runc", "io.containerd.runc.v2", "crun", "youki", "nvidia", "runsc", "io.containerd.runsc.v1", "kata",
    "kata-runtime", "io.containerd.kata.v2",
)  # fmt: skip

#: AppArmor profiles other than Docker's own may allow what it denies (``mount``, writing to ``/proc/sys``).
APPARMOR_PROFILES = ("docker-default",)
#: SELinux types that run a container unconfined (``spc_t``: the "super privileged container").
UNCONFINED_LABELS = ("label:disable", "label:type:unconfined_t", "label:type:spc_t")


class UnsafeConfiguration(ValueError):
    """Configuration that would undo one of devdock's security guarantees."""


@dataclass
class ContainerSettings:
    """Everything that decides the container of one spawn."""

    image: str
    name: str
    hostname: str
    command: list[str]
    environment: dict[str, str]
    labels: dict[str, str]
    network: str
    port: int
    #: {volume name or host path: {"bind": path, "mode": "rw"}} as docker-py's binds
    binds: dict = field(default_factory=dict)
    #: list of docker.types.Mount
    mounts: list = field(default_factory=list)
    mem_limit: int | None = None
    cpu_limit: float | None = None
    #: size of the tmpfs on /tmp and /var/tmp (they count against mem_limit), e.g. "2g"; empty: no tmpfs
    tmp_size: str | None = None
    #: Docker's json-file log rotation: size of one file ("10m") and how many are kept
    log_max_size: str | None = None
    log_max_files: int = 3
    #: how readily the host's OOM killer picks this container over the hub (-1000..1000)
    oom_score_adj: int | None = None
    shm_size: str | None = None
    pids_limit: int | None = None
    stop_timeout: int | None = None
    #: extra published ports, {"2222/tcp": (host_ip, host_port)}
    published: dict = field(default_factory=dict)
    #: docker.types.DeviceRequest list (GPUs)
    device_requests: list = field(default_factory=list)
    devices: list = field(default_factory=list)
    #: the host address the server's own port is published on (DockerSpawner's ``host_ip``, when
    #: ``use_internal_ip`` is off); None: not published, the proxy reaches the container on its network
    server_host_ip: str | None = None
    #: the loader variables devdock itself sets (``LD_LIBRARY_PATH`` of the host driver in ``gpu_mode = "devices"``)
    loader_environment: dict = field(default_factory=dict)
    extra_create: dict = field(default_factory=dict)
    extra_host: dict = field(default_factory=dict)


def network_spec(name: str, isolated: bool = True, labels: dict | None = None) -> dict:
    """``create_network`` arguments for the user network.

    A bridge; ``isolated`` turns off inter-container traffic (``enable_icc=false``): user containers
    cannot reach each other at all, while the host (a hub running there, at the gateway address) and
    the host's routes still work. A hub that itself runs in a container on this network needs it on.
    """
    return {
        "name": name,
        "driver": "bridge",
        "check_duplicate": True,
        "options": {"com.docker.network.bridge.enable_icc": "false"} if isolated else {},
        "labels": {MANAGED_LABEL: "true", **(labels or {})},
    }


def deep_merge(base: dict, extra: dict) -> dict:
    """A new dict: ``extra`` merged over ``base``, recursing into dicts; inputs are not modified."""
    result = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def capability_names(values) -> set[str]:
    """``{"SYS_ADMIN", ...}`` from Docker's spellings (``sys_admin``, ``CAP_SYS_ADMIN``)."""
    return {str(v).strip().upper().removeprefix("CAP_") for v in values or []}


def check_capabilities(added, dropped, setting: str, drop_key: str = "cap_drop") -> None:
    """Only the entrypoint's capabilities may be added, and every other one must be dropped."""
    extra = capability_names(added) - set(ENTRYPOINT_CAPABILITIES)
    if extra:
        raise UnsafeConfiguration(
            f"devdock refuses {setting} capabilities {sorted(extra)}: users' containers get only "
            f"{list(ENTRYPOINT_CAPABILITIES)}, which the entrypoint drops before the user's processes start"
        )
    if "ALL" not in capability_names(dropped):
        raise UnsafeConfiguration(f"devdock refuses a {setting} without {drop_key} ALL: every other capability goes")


def check_sysctls(sysctls: dict, setting: str) -> None:
    """The privileged-port boundary stays where devdock put it (a site's sysctls merge over devdock's)."""
    for key, value in PRIVILEGED_PORTS.items():
        if str(sysctls.get(key)) != value:
            raise UnsafeConfiguration(
                f"devdock refuses {setting} sysctls {key}={sysctls.get(key)!r}: it keeps {value}, so that users "
                "cannot replace the SSH listener on the published port"
            )


def check_security_opt(options) -> None:
    """``no-new-privileges`` stays on; seccomp and AppArmor stay Docker's default profiles; SELinux stays confining.

    Allow-listed: ``no-new-privileges(:true)``, SELinux ``label`` options that keep a confining type, and Docker's
    default AppArmor profile by name. A custom seccomp or AppArmor profile can allow what the default blocks
    (``unshare``, ``mount``, ``keyctl``...), and other options (``systempaths=unconfined``,
    ``writable-cgroups=true``) open what Docker keeps closed.
    """
    normal = [str(o).replace("=", ":").strip().lower() for o in options or []]
    for original, opt in zip(options or [], normal, strict=True):
        if opt.startswith("no-new-privileges:") and opt != "no-new-privileges:true":
            raise UnsafeConfiguration(f"devdock refuses security_opt {original!r}: no-new-privileges stays on")
        if opt.endswith(":unconfined") or opt in UNCONFINED_LABELS:
            raise UnsafeConfiguration(f"devdock refuses security_opt {original!r}: confinement stays on")
        if opt.startswith("seccomp:") or (opt.startswith("apparmor:") and opt[9:] not in APPARMOR_PROFILES):
            raise UnsafeConfiguration(
                f"devdock refuses security_opt {original!r}: confinement stays Docker's default seccomp and "
                "AppArmor profiles (a profile of its own can allow what they block)"
            )
        if not (opt in ("no-new-privileges", "no-new-privileges:true") or opt.startswith(("label:", "apparmor:"))):
            raise UnsafeConfiguration(
                f"devdock refuses security_opt {original!r}: only no-new-privileges:true, SELinux labels and "
                "Docker's default AppArmor profile may be set"
            )
    if not {"no-new-privileges", "no-new-privileges:true"} & set(normal):
        raise UnsafeConfiguration(
            "devdock refuses a security_opt without no-new-privileges: a setting that replaces the list must "
            "keep 'no-new-privileges:true'"
        )


def _bind_sources(binds) -> list[str]:
    return [str(b).split(":")[0] for b in binds] if isinstance(binds, list) else [str(b) for b in binds or {}]


def mount_sources(mounts) -> list[tuple[str, str]]:
    """Host paths that ``mounts`` bring in, with how (docker.types.Mount or plain dicts, Docker's or docker-py's
    spelling): bind mounts, and volume mounts whose driver options name a host path as their ``device`` (the
    local driver's ``type=none,o=bind,device=/var/run`` is a bind under another name; ``device=/dev/sdb1``
    mounts a host disk)."""
    sources = []
    for m in mounts or []:
        get = m.get if isinstance(m, dict) else lambda k, d=None, m=m: getattr(m, k, d)
        kind = str(get("Type", None) or get("type", None) or "volume").lower()
        if kind == "bind":
            sources.append((str(get("Source", None) or get("source", None) or ""), "mounts"))
        elif kind == "volume":
            driver = (get("VolumeOptions", None) or {}).get("DriverConfig") or {}
            device = str((driver.get("Options") or {}).get("device", ""))
            if device.startswith("/"):
                sources.append((device, "mounts (a volume whose driver option device is a host path)"))
    return sources


def _addresses(value) -> list[str]:
    """The host addresses of one ``port_bindings`` value (docker-py: a port, ``(ip,)``, ``(ip, port)``, a list of
    them, None); ``""`` stands for every address."""
    items = value if isinstance(value, list) else [value]
    return [str(i[0]) if isinstance(i, tuple | list) and i else "" for i in items]


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port_bindings(bindings: dict, server_port: int, published: dict) -> None:
    """Only devdock publishes ports: the SSH port as devdock chose it, and the server's own port on a loopback
    address (the proxy on the same host reaches it there). Anything else puts a listener of the user's choosing
    on the host's addresses, or the server's port past the proxy."""
    ours = {key.split("/")[0]: value for key, value in published.items()}
    for key, value in (bindings or {}).items():
        port = str(key).split("/")[0]
        if port == str(server_port):
            wide = [a or "0.0.0.0" for a in _addresses(value) if not _loopback(a)]
            if wide:
                raise UnsafeConfiguration(
                    f"devdock refuses to publish the server's port {server_port} on {', '.join(wide)} (host_ip or "
                    "host_config port_bindings): it stays on a loopback address such as 127.0.0.1, behind the "
                    "proxy; or leave use_internal_ip on (the default) and publish nothing"
                )
        elif port not in ours or ours[port] != value:
            raise UnsafeConfiguration(
                f"devdock refuses host_config port_bindings {key!r}: {value!r}: only devdock publishes ports (the "
                "SSH port from ssh_port_range), so that no listener of a user's choosing answers on the host"
            )


def check_runtime(runtime, setting: str) -> None:
    if runtime and str(runtime) not in RUNTIMES:
        raise UnsafeConfiguration(
            f"devdock refuses {setting} runtime={runtime!r}: a runtime decides how a container is isolated; "
            f"devdock accepts {', '.join(RUNTIMES)}"
        )


def check_host_config(host_config: dict, network: str, devices=(), device_requests=()) -> None:
    """Refuse settings that break isolation, naming the setting and why, instead of silently dropping them.

    ``network``, ``devices`` and ``device_requests`` are what devdock itself gave the container (its network,
    its allotted GPUs): anything beyond them came from the site's configuration.
    """
    for key, why in FORBIDDEN_HOST_CONFIG.items():
        if host_config.get(key):
            raise UnsafeConfiguration(f"devdock refuses host_config {key}={host_config[key]!r}: {why}")
    for key, allowed in NAMESPACE_MODES.items():
        value = str(host_config.get(key) or "")
        if value.lower() not in allowed:
            raise UnsafeConfiguration(
                f"devdock refuses host_config {key}={value!r}: sharing a namespace with the host or another "
                "container undoes the isolation"
            )
    mode = str(host_config.get("network_mode") or "")
    if mode != network:
        raise UnsafeConfiguration(
            f"devdock refuses host_config network_mode={mode!r}: users' servers stay on devdock's network "
            f"({network!r}); choose another one with c.DevDockSpawner.network_name"
        )
    check_capabilities(host_config.get("cap_add"), host_config.get("cap_drop"), "host_config")
    check_sysctls(host_config.get("sysctls") or {}, "host_config")
    check_security_opt(host_config.get("security_opt"))
    binds = [(source, "binds, from volumes or extra_host_config") for source in _bind_sources(host_config.get("binds"))]
    for source, setting in binds + mount_sources(host_config.get("mounts")):
        problem = host_path_problem(source)
        if problem:
            raise UnsafeConfiguration(f"devdock refuses to mount {source!r} ({setting}): {problem}")
    check_runtime(host_config.get("runtime"), "host_config")
    extra_devices = [d for d in host_config.get("devices") or [] if d not in list(devices)]
    if extra_devices:
        raise UnsafeConfiguration(
            f"devdock refuses host_config devices {extra_devices}: a server gets only the GPUs allotted to it"
        )
    extra_requests = [r for r in host_config.get("device_requests") or [] if r not in list(device_requests)]
    if extra_requests:
        raise UnsafeConfiguration(
            "devdock refuses host_config device_requests: GPUs are requested by devdock's allocator (profiles' "
            "'gpus'), so that every GPU has one holder"
        )


def _environment(environment) -> dict:
    """A container's environment as a dict, from docker-py's dict or its ``["NAME=value"]`` list."""
    if isinstance(environment, dict):
        return {str(k): None if v is None else str(v) for k, v in environment.items()}
    return dict(str(e).partition("=")[::2] for e in environment or [])


def check_gpu_environment(environment, ours: dict) -> None:
    """The GPU variables of the final environment are the ones devdock set (``ours``), so that no extra setting
    hands a server GPUs it was not allotted (``NVIDIA_VISIBLE_DEVICES=all`` under the NVIDIA runtime)."""
    final = _environment(environment)
    for name in GPU_ENVIRONMENT:
        if final.get(name) != ours.get(name):
            raise UnsafeConfiguration(
                f"devdock refuses extra_create_kwargs environment {name}={final.get(name)!r}: which GPUs a server "
                f"sees follows its allotment ({name}={ours.get(name)!r}); profiles' 'gpus' choose GPUs"
            )


def check_loader_environment(environment, ours: dict) -> None:
    """No loader variable (``LD_*``, :data:`LOADER_ENVIRONMENT`) but the ones devdock itself set (``ours``: the host
    driver's libraries in ``gpu_mode = "devices"``): the image's entrypoint runs as root, with its capabilities,
    and a library preloaded from a user's home would run there too."""
    for name, value in _environment(environment).items():
        if (name.startswith("LD_") or name in LOADER_ENVIRONMENT) and ours.get(name) != value:
            raise UnsafeConfiguration(
                f"devdock refuses the environment variable {name}={value!r} (environment, a profile's environment or "
                "extra_create_kwargs): it makes the dynamic loader or the C library load files of its choosing "
                "into the image's entrypoint, which runs as root; install libraries in the image instead "
                "(/etc/ld.so.conf.d)"
            )


def check_create_kwargs(create: dict, s: ContainerSettings) -> None:
    """What ``extra_create_kwargs`` may not change: who the entrypoint runs as and which entrypoint that is, the
    runtime, the networks, devdock's own labels, and the loader and GPU variables."""
    for key, why in (
        ("user", "the image's entrypoint starts as root only to create the account, then runs everything as the "
                 "user; choose the uid with c.DevDockSpawner.login_uid"),
        ("entrypoint", "the image's entrypoint is what drops root and every capability before the server starts; "
                       "change the server's command with cmd instead"),
    ):  # fmt: skip
        if create.get(key) not in (None, "", []):
            raise UnsafeConfiguration(f"devdock refuses extra_create_kwargs {key}={create[key]!r}: {why}")
    check_runtime(create.get("runtime"), "extra_create_kwargs")
    endpoints = ((create.get("networking_config") or {}).get("EndpointsConfig") or {}).keys()
    others = [n for n in endpoints if n != s.network]
    if others:
        raise UnsafeConfiguration(
            f"devdock refuses extra_create_kwargs networking_config for {others}: users' servers stay on devdock's "
            f"network ({s.network!r}) alone"
        )
    for key, value in (create.get("labels") or {}).items():
        if str(key).startswith(LABEL_PREFIX + ".") and s.labels.get(key) != value:
            raise UnsafeConfiguration(
                f"devdock refuses extra_create_kwargs labels {key}={value!r}: devdock's labels say whose server a "
                "container is"
            )
    check_loader_environment(create.get("environment"), s.loader_environment)
    check_gpu_environment(create.get("environment"), s.environment)


def container_spec(s: ContainerSettings) -> tuple[dict, dict]:
    """``(create_kwargs, host_config_kwargs)`` for docker-py.

    The site's ``extra_create`` / ``extra_host`` are merged last, so they can change anything but the
    guarantees checked by :func:`check_host_config`.
    """
    ports = [f"{s.port}/tcp", *s.published]
    create = {
        "image": s.image,
        "name": s.name,
        "hostname": s.hostname,
        "command": list(s.command),
        "environment": dict(s.environment),
        "labels": dict(s.labels),
        "ports": ports,
        "volumes": [b["bind"] for b in s.binds.values()],
    }
    if s.stop_timeout is not None:
        create["stop_timeout"] = s.stop_timeout

    host = {
        "binds": copy.deepcopy(s.binds),
        "mounts": list(s.mounts),
        "network_mode": s.network,
        "cap_drop": ["ALL"],
        "cap_add": list(ENTRYPOINT_CAPABILITIES),
        "security_opt": ["no-new-privileges:true"],
        "sysctls": dict(PRIVILEGED_PORTS),
        # Every namespace private, also the cgroup namespace (on cgroup v1 Docker's default is the host's).
        "cgroupns": "private",
        "ipc_mode": "private",
        # The container is removed explicitly on stop, after its exit status was read.
        "auto_remove": False,
        "init": False,  # the image runs tini as PID 1
    }
    if s.published:
        host["port_bindings"] = {key.split("/")[0]: value for key, value in s.published.items()}
    if s.server_host_ip is not None:
        host.setdefault("port_bindings", {})[str(s.port)] = (s.server_host_ip,)
    if s.mem_limit is not None:
        host["mem_limit"] = s.mem_limit
        host["memswap_limit"] = s.mem_limit  # no swap beyond the limit: an out-of-memory kill, not a slow host
    if s.cpu_limit is not None:
        host["cpu_period"] = 100_000
        host["cpu_quota"] = int(s.cpu_limit * 100_000)
    if s.shm_size:
        host["shm_size"] = s.shm_size
    if s.tmp_size:
        # The only places outside the home a user can write to: bounded, so the container layer stays small.
        options = f"rw,exec,nosuid,nodev,size={s.tmp_size},mode=1777"
        host["tmpfs"] = {"/tmp": options, "/var/tmp": options, "/run/lock": "rw,noexec,nosuid,nodev,size=8m,mode=1777"}
    if s.log_max_size:
        host["log_config"] = {
            "type": "json-file",
            "config": {"max-size": s.log_max_size, "max-file": str(s.log_max_files)},
        }
    if s.oom_score_adj is not None:
        host["oom_score_adj"] = s.oom_score_adj
    if s.pids_limit:
        host["pids_limit"] = s.pids_limit
    if s.device_requests:
        host["device_requests"] = list(s.device_requests)
    if s.devices:
        host["devices"] = list(s.devices)

    create = deep_merge(create, s.extra_create)
    host = deep_merge(host, s.extra_host)
    check_host_config(host, s.network, s.devices, s.device_requests)
    check_port_bindings(host.get("port_bindings"), s.port, s.published)
    check_create_kwargs(create, s)
    return create, host


def last_lines(logs: bytes | str) -> str:
    """A container's last output lines on one line, for an error message."""
    if isinstance(logs, bytes):
        logs = logs.decode(errors="replace")
    return logs.strip().replace("\n", " | ")[-600:] or "(none)"

"""The container spec: hardening always on, site extras merged, unsafe settings refused (tables)."""

from __future__ import annotations

import copy

import pytest
from docker.types import Mount

from devdock_spawner.container import (
    ContainerSettings,
    UnsafeConfiguration,
    container_spec,
    deep_merge,
)


def settings(**overrides) -> ContainerSettings:
    base = dict(
        image="devdock/desktop:latest",
        name="devdock-alice",
        hostname="alice",
        command=["jupyterhub-singleuser"],
        environment={"DEVDOCK_LOGIN": "alice"},
        labels={"io.devdock.owner": "alice"},
        network="devdock",
        port=8888,
        binds={"devdock-home-alice": {"bind": "/home/alice", "mode": "rw"}},
    )
    base.update(overrides)
    return ContainerSettings(**base)


def test_defaults_are_hardened():
    create, host = container_spec(settings())
    assert host["cap_drop"] == ["ALL"]
    # what the entrypoint needs to create the account and drop to it, written out (not the module's constant)
    assert sorted(host["cap_add"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "NET_BIND_SERVICE", "SETGID", "SETUID"]
    assert host["sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "1024"}  # the SSH port stays privileged
    assert host["security_opt"] == ["no-new-privileges:true"]
    assert "privileged" not in host
    assert host["network_mode"] == "devdock"
    assert create["ports"] == ["8888/tcp"]
    assert create["volumes"] == ["/home/alice"]
    assert create["labels"] == {"io.devdock.owner": "alice"}


LIMITS = [
    ("memory", {"mem_limit": 2 * 1024**3}, "mem_limit", 2 * 1024**3),
    ("cpu", {"cpu_limit": 1.5}, "cpu_quota", 150_000),
    ("shm", {"shm_size": "1g"}, "shm_size", "1g"),
    ("pids", {"pids_limit": 512}, "pids_limit", 512),
    (
        "published",
        {"published": {"2222/tcp": ("127.0.0.1", 42022)}},
        "port_bindings",
        {"2222": ("127.0.0.1", 42022)},
    ),
]


@pytest.mark.parametrize(("overrides", "key", "value"), [c[1:] for c in LIMITS], ids=[c[0] for c in LIMITS])
def test_limits_reach_host_config(overrides, key, value):
    _, host = container_spec(settings(**overrides))
    assert host[key] == value


def test_unset_limits_are_left_to_docker():
    _, host = container_spec(settings())
    for key in ("mem_limit", "cpu_quota", "shm_size", "pids_limit", "device_requests", "port_bindings"):
        assert key not in host


UNSAFE = [
    ("privileged", {"privileged": True}, "privileged"),
    ("host-network", {"network_mode": "host"}, "network_mode"),
    ("other-containers-network", {"network_mode": "container:devdock-bob"}, "network_mode"),
    ("other-network", {"network_mode": "bridge"}, "network_name"),
    ("host-pid", {"pid_mode": "host"}, "pid_mode"),
    ("other-containers-pid", {"pid_mode": "container:devdock-bob"}, "pid_mode"),
    ("host-ipc", {"ipc_mode": "host"}, "ipc_mode"),
    ("shareable-ipc", {"ipc_mode": "shareable"}, "ipc_mode"),
    ("host-uts", {"uts_mode": "host"}, "uts_mode"),
    ("host-userns", {"userns_mode": "host"}, "userns_mode"),
    ("host-cgroupns", {"cgroupns": "host"}, "cgroupns"),
    ("cap-add-sys-admin", {"cap_add": ["CHOWN", "SYS_ADMIN"]}, "SYS_ADMIN"),
    ("cap-add-spelled-cap", {"cap_add": ["cap_net_admin"]}, "NET_ADMIN"),
    ("cap-add-all", {"cap_add": ["ALL"]}, "ALL"),
    ("cap-drop-without-all", {"cap_drop": ["NET_RAW"]}, "cap_drop ALL"),
    ("cap-drop-empty", {"cap_drop": []}, "cap_drop ALL"),
    ("nnp-off", {"security_opt": ["no-new-privileges:false"]}, "no-new-privileges"),
    ("nnp-dropped-by-replacing-the-list", {"security_opt": ["label=type:svirt_apache_t"]}, "no-new-privileges"),
    ("seccomp-off", {"security_opt": ["no-new-privileges:true", "seccomp=unconfined"]}, "confinement"),
    ("apparmor-off", {"security_opt": ["no-new-privileges", "apparmor=unconfined"]}, "confinement"),
    ("selinux-off", {"security_opt": ["no-new-privileges", "label=disable"]}, "confinement"),
    ("docker-socket", {"binds": {"/var/run/docker.sock": {"bind": "/var/run/docker.sock"}}}, "Docker socket"),
    ("socket-folder", {"binds": {"/var/run": {"bind": "/host-run"}}}, "Docker socket"),
    ("root-folder", {"binds": {"/": {"bind": "/host"}}}, "Docker socket"),
    ("socket-folder-list", {"binds": ["/run:/host-run:rw"]}, "Docker socket"),
    ("socket-through-mounts", {"mounts": [{"Type": "bind", "Source": "/run/docker.sock", "Target": "/s"}]}, "socket"),
    ("socket-folder-mounts", {"mounts": [{"type": "bind", "source": "/var/run", "target": "/r"}]}, "socket"),
    ("host-device", {"devices": ["/dev/sda:/dev/sda:rwm"]}, "devices"),
    ("ssh-port-unprivileged", {"sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"}}, "SSH listener"),
    ("device-cgroup-rule", {"device_cgroup_rules": ["c 195:* rwm"]}, "device_cgroup_rules"),
    ("another-users-volumes", {"volumes_from": ["devdock-bob"]}, "volumes_from"),
    (
        "gpus-around-the-allocator",
        {"device_requests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]},
        "allocator",
    ),
    (
        "proc",
        {"binds": {"/proc": {"bind": "/host-proc"}}},
        r"'/proc' \(binds, from volumes or extra_host_config\): /proc is the host's",
    ),
    ("inside-proc", {"binds": ["/proc/1/root:/host:ro"]}, "/proc is the host's"),
    ("containerd-socket", {"binds": {"/run/containerd": {"bind": "/c"}}}, "/run is the host's"),
    ("docker-data", {"binds": {"/var/lib/docker/volumes": {"bind": "/v"}}}, "/var/lib/docker is the host's"),
    ("containerd-data", {"mounts": [{"Type": "bind", "Source": "/var/lib/containerd", "Target": "/c"}]}, "containerd"),
    ("sys", {"binds": {"/sys/fs/cgroup": {"bind": "/cg"}}}, "/sys is the host's"),
    ("dev", {"binds": {"/dev": {"bind": "/hostdev"}}}, "/dev is the host's"),
    ("var-holds-docker-data", {"binds": {"/var/lib": {"bind": "/l"}}}, "/var/lib/docker"),
    ("root-home", {"binds": {"/root/.ssh": {"bind": "/k", "mode": "ro"}}}, "/root is the host's"),
    ("host-etc", {"binds": {"/etc/": {"bind": "/hostetc", "mode": "ro"}}}, "/etc is the host's configuration"),
    ("path-tricks", {"binds": {"/srv/../proc//": {"bind": "/p"}}}, "/proc is the host's"),
    (
        "local-volume-bind-of-var-run",
        {
            "mounts": [
                {
                    "Type": "volume",
                    "Target": "/r",
                    "Source": "sneaky",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"type": "none", "o": "bind", "device": "/var/run"},
                        }
                    },
                }
            ]
        },
        r"'/var/run' \(mounts \(a volume whose driver option device is a host path\)\): .*Docker socket",
    ),  # fmt: skip
    (
        "local-volume-of-a-host-disk",
        {
            "mounts": [
                {
                    "Type": "volume",
                    "Target": "/d",
                    "Source": "disk",
                    "VolumeOptions": {
                        "DriverConfig": {"Name": "local", "Options": {"type": "ext4", "device": "/dev/sda1"}}
                    },
                }
            ]
        },
        "/dev is the host's",
    ),  # fmt: skip
    ("seccomp-profile", {"security_opt": ["no-new-privileges:true", "seccomp=/etc/allow-all.json"]}, "seccomp"),
    ("apparmor-profile", {"security_opt": ["no-new-privileges:true", "apparmor=my-loose-profile"]}, "AppArmor"),
    ("selinux-spc", {"security_opt": ["no-new-privileges:true", "label=type:spc_t"]}, "confinement stays on"),
    ("systempaths", {"security_opt": ["no-new-privileges:true", "systempaths=unconfined"]}, "confinement"),
    ("writable-cgroups", {"security_opt": ["no-new-privileges:true", "writable-cgroups=true"]}, "only no-new"),
    ("runtime", {"runtime": "sysbox-runc"}, "runtime='sysbox-runc'"),
    ("links", {"links": {"devdock-bob": "bob"}}, "links"),
    ("publish-all-ports", {"publish_all_ports": True}, "publish_all_ports"),
    ("server-port-on-all-addresses", {"port_bindings": {8888: ("0.0.0.0",)}}, "server's port 8888 on 0.0.0.0"),
    ("server-port-as-a-bare-port", {"port_bindings": {"8888/tcp": 18888}}, "server's port 8888 on 0.0.0.0"),
    ("another-port", {"port_bindings": {"8080": ("127.0.0.1", 8080)}}, "only devdock publishes ports"),
    ("another-port-anywhere", {"port_bindings": {"9000": None}}, "only devdock publishes ports"),
]


@pytest.mark.parametrize(("extra_host", "match"), [c[1:] for c in UNSAFE], ids=[c[0] for c in UNSAFE])
def test_unsafe_site_settings_are_refused(extra_host, match):
    with pytest.raises(UnsafeConfiguration, match=match):
        container_spec(settings(extra_host=extra_host))


UNSAFE_CREATE = [
    ("root-user", {"user": "0"}, "user='0'"),
    ("root-by-name", {"user": "root:root"}, "extra_create_kwargs user"),
    ("another-entrypoint", {"entrypoint": ["jupyterhub-singleuser"]}, "entrypoint"),
    ("entrypoint-as-a-string", {"entrypoint": "/bin/sh -c 'exec \"$@\"'"}, "entrypoint"),
    ("ld-preload", {"environment": {"LD_PRELOAD": "/home/alice/.local/lib/x.so"}}, "LD_PRELOAD"),
    ("ld-audit-in-a-list", {"environment": ["LD_AUDIT=/tmp/a.so"]}, "LD_AUDIT"),
    ("ld-library-path", {"environment": {"LD_LIBRARY_PATH": "/home/alice/lib"}}, "LD_LIBRARY_PATH"),
    ("glibc-tunables", {"environment": {"GLIBC_TUNABLES": "glibc.malloc.mxfast=1"}}, "GLIBC_TUNABLES"),
    ("gconv-path", {"environment": {"GCONV_PATH": "/home/alice"}}, "GCONV_PATH"),
    ("runtime", {"runtime": "io.containerd.unknown.v1"}, "extra_create_kwargs runtime"),
    ("second-network", {"networking_config": {"EndpointsConfig": {"devdock": {}, "hub-internal": {}}}}, "hub-internal"),
    ("another-owner", {"labels": {"io.devdock.owner": "bob"}}, "io.devdock.owner"),
]


@pytest.mark.parametrize(("extra_create", "match"), [c[1:] for c in UNSAFE_CREATE], ids=[c[0] for c in UNSAFE_CREATE])
def test_unsafe_create_kwargs_are_refused_with_a_sentence_that_names_them(extra_create, match):
    with pytest.raises(UnsafeConfiguration, match=match):
        container_spec(settings(extra_create=extra_create))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"environment": {"DEVDOCK_LOGIN": "alice", "LD_PRELOAD": "/home/alice/x.so"}}, "LD_PRELOAD"),
        ({"server_host_ip": "0.0.0.0"}, "server's port 8888 on 0.0.0.0"),
        ({"server_host_ip": "192.168.1.5"}, "on 192.168.1.5"),
        ({"server_host_ip": "::"}, "on ::"),
        ({"mounts": [Mount("/data", "/proc", type="bind")]}, "/proc is the host's"),
    ],
    ids=["ld-preload-in-environment", "host-ip-all", "host-ip-lan", "host-ip-v6-all", "mounts-trait-proc"],
)
def test_unsafe_spawner_settings_are_refused(overrides, match):
    """The same refusals for what comes from the spawner's own traits (environment, host_ip, mounts)."""
    with pytest.raises(UnsafeConfiguration, match=match):
        container_spec(settings(**overrides))


def test_what_devdock_itself_publishes_and_loads_passes():
    """Controls: the server's port on loopback, the SSH port on every address, the host driver's libraries."""
    _, host = container_spec(settings(server_host_ip="127.0.0.1", published={"22/tcp": ("0.0.0.0", 42022)}))
    assert host["port_bindings"] == {"22": ("0.0.0.0", 42022), "8888": ("127.0.0.1",)}
    container_spec(settings(server_host_ip="::1"))
    driver = {"LD_LIBRARY_PATH": "/usr/lib/nvidia/lib64:/usr/lib/nvidia/lib"}
    env = {"DEVDOCK_LOGIN": "alice", **driver}
    container_spec(settings(environment=env, loader_environment=driver))
    with pytest.raises(UnsafeConfiguration, match="LD_LIBRARY_PATH"):
        container_spec(settings(environment=env, loader_environment=driver,
                                extra_create={"environment": {"LD_LIBRARY_PATH": "/home/alice"}}))  # fmt: skip


def test_site_extras_merge_without_touching_inputs():
    extra_host = {"ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}], "cap_add": ["CHOWN"]}
    extra_create = {"labels": {"site": "x"}, "working_dir": "/srv"}
    before = copy.deepcopy((extra_host, extra_create))
    s = settings(extra_host=extra_host, extra_create=extra_create)
    create, host = container_spec(s)
    assert host["cap_add"] == ["CHOWN"]  # fewer capabilities than the default is fine
    assert host["ulimits"] == extra_host["ulimits"]
    assert create["labels"] == {"io.devdock.owner": "alice", "site": "x"}
    assert create["working_dir"] == "/srv"
    assert (extra_host, extra_create) == before
    # the spec owns its dicts: changing it does not change the settings it came from
    create["environment"]["X"] = "1"
    host["binds"]["devdock-home-alice"]["mode"] = "ro"
    assert "X" not in s.environment
    assert s.binds["devdock-home-alice"]["mode"] == "rw"


MERGES = [
    ("flat", {"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
    ("override", {"a": 1}, {"a": 2}, {"a": 2}),
    ("nested", {"a": {"x": 1, "y": 1}}, {"a": {"y": 2}}, {"a": {"x": 1, "y": 2}}),
    ("replace-list", {"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
    ("dict-over-scalar", {"a": 1}, {"a": {"x": 1}}, {"a": {"x": 1}}),
]


@pytest.mark.parametrize(("base", "extra", "expected"), [c[1:] for c in MERGES], ids=[c[0] for c in MERGES])
def test_deep_merge(base, extra, expected):
    assert deep_merge(base, extra) == expected


SAFE = [
    ("own-network-spelled-out", {"network_mode": "devdock"}),
    ("private-namespaces", {"pid_mode": "", "ipc_mode": "private", "userns_mode": "private"}),
    ("fewer-capabilities", {"cap_add": ["CHOWN", "SETUID", "SETGID", "FOWNER", "DAC_OVERRIDE"]}),
    ("nnp-and-a-label", {"security_opt": ["no-new-privileges:true", "label=type:container_t"]}),
    ("a-data-bind", {"binds": {"/srv/datasets": {"bind": "/data", "mode": "ro"}}}),
    ("another-sysctl", {"sysctls": {"net.ipv4.tcp_keepalive_time": "600"}}),
    ("a-volume-mount", {"mounts": [{"Type": "volume", "Source": "datasets", "Target": "/data"}]}),
    ("a-file-from-etc", {"binds": {"/etc/localtime": {"bind": "/etc/localtime", "mode": "ro"}}}),
    ("a-folder-named-like-proc", {"binds": {"/srv/proc": {"bind": "/data", "mode": "ro"}}}),
    ("a-volume-named-like-a-host-folder", {"binds": {"proc": {"bind": "/data"}}}),
    (
        "nfs-volume",
        {
            "mounts": [
                {
                    "Type": "volume",
                    "Source": "nfs",
                    "Target": "/n",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"type": "nfs", "o": "addr=10.0.0.1", "device": ":/export"},
                        }
                    },
                }
            ]
        },
    ),
    (
        "local-bind-of-a-data-folder",
        {
            "mounts": [
                {
                    "Type": "volume",
                    "Source": "d",
                    "Target": "/d",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"type": "none", "o": "bind", "device": "/srv/datasets"},
                        }
                    },
                }
            ]
        },
    ),
    ("docker-default-apparmor", {"security_opt": ["no-new-privileges:true", "apparmor=docker-default"]}),
    ("gvisor", {"runtime": "runsc"}),
    ("nvidia-runtime", {"runtime": "nvidia"}),
]


@pytest.mark.parametrize("extra_host", [c[1] for c in SAFE], ids=[c[0] for c in SAFE])
def test_harmless_site_settings_pass_the_check(extra_host):
    container_spec(settings(extra_host=extra_host))


def test_the_allotted_gpu_devices_pass_and_only_they():
    allotted = ["/dev/nvidia1:/dev/nvidia1:rwm"]
    container_spec(settings(devices=allotted, extra_host={"devices": allotted}))
    with pytest.raises(UnsafeConfiguration, match="devices"):
        container_spec(settings(devices=allotted, extra_host={"devices": [*allotted, "/dev/nvidia0:/dev/nvidia0"]}))


@pytest.mark.parametrize(
    "extra_create",
    [
        {"environment": {"NVIDIA_VISIBLE_DEVICES": "all"}},
        {"environment": {"CUDA_VISIBLE_DEVICES": "0,1"}},
        {"environment": ["NVIDIA_VISIBLE_DEVICES=all"]},  # a list replaces devdock's environment whole
        {"environment": {"DEVDOCK_GPUS": "GPU-0"}},
    ],
    ids=["nvidia-all", "cuda", "list", "devdock-gpus"],
)
def test_no_gpu_by_the_back_door_of_a_site_environment(extra_create):
    gpu_less = {"DEVDOCK_LOGIN": "alice", "NVIDIA_VISIBLE_DEVICES": "void"}
    container_spec(settings(environment=gpu_less, extra_create={"environment": {"SITE": "1"}}))  # control: passes
    with pytest.raises(UnsafeConfiguration, match="which GPUs a server sees follows its allotment"):
        container_spec(settings(environment=gpu_less, extra_create=extra_create))

"""The Swarm service spec and what devdock reads back from Swarm (pure logic, tables)."""

from __future__ import annotations

import pytest

from devdock_spawner import swarm
from devdock_spawner.container import UnsafeConfiguration
from devdock_spawner.profiles import load_profiles
from tests.unit.test_container import settings


def spec(container=None, **swarm_settings):
    return swarm.service_spec(container or settings(), swarm.SwarmSettings(**swarm_settings))


def test_one_task_never_restarted_with_the_same_hardening_as_a_container():
    s = spec(settings(pids_limit=4096, mem_limit=2**30, cpu_limit=1.5, shm_size="512m", stop_timeout=5))
    task = s["task_template"]
    container = task["ContainerSpec"]
    assert task["RestartPolicy"] == {"Condition": "none"}
    assert container["CapabilityDrop"] == ["ALL"]
    assert set(container["CapabilityAdd"]) == {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_NET_BIND_SERVICE",
    }
    assert container["Sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "1024"}
    assert task["Resources"]["Limits"] == {"Pids": 4096, "MemoryBytes": 2**30, "NanoCPUs": 1_500_000_000}
    assert container["StopGracePeriod"] == 5_000_000_000
    assert {"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": 512 * 2**20}} in container["Mounts"]
    assert container["Args"] == ["jupyterhub-singleuser"] and "Command" not in container  # the image's entrypoint runs
    assert task["Networks"] == [{"Target": "devdock"}]
    assert s["labels"] == container["Labels"] == {"io.devdock.owner": "alice"}


def test_home_volume_carries_labels_and_optionally_a_shared_driver():
    local = spec(volume_labels={"io.devdock.owner": "alice"})["task_template"]["ContainerSpec"]["Mounts"][0]
    assert local == {
        "Target": "/home/alice", "Source": "devdock-home-alice", "ReadOnly": False, "Type": "volume",
        "VolumeOptions": {"Labels": {"io.devdock.owner": "alice"}},
    }  # fmt: skip
    nfs = {"type": "nfs", "o": "addr=nfs,rw", "device": ":/homes/alice"}
    shared = spec(volume_driver="local", volume_driver_options=nfs)["task_template"]["ContainerSpec"]["Mounts"][0]
    assert shared["VolumeOptions"]["DriverConfig"] == {"Name": "local", "Options": nfs}
    host_path = spec(settings(binds={"/data": {"bind": "/data", "mode": "ro"}}))["task_template"]["ContainerSpec"]
    assert host_path["Mounts"][0] == {"Target": "/data", "Source": "/data", "ReadOnly": True, "Type": "bind"}


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [(0, None), (2, [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}])],
)
def test_gpus_become_a_generic_resource_reservation(gpus, expected):
    resources = spec(gpus=gpus)["task_template"]["Resources"]
    assert resources.get("Reservations", {}).get("GenericResources") == expected


@pytest.mark.parametrize(
    ("mode", "endpoint_mode"),
    [("host", "dnsrr"), ("ingress", "vip")],
)
def test_ssh_port_published_per_node_or_cluster_wide(mode, endpoint_mode):
    s = spec(settings(published={"2222/tcp": ("0.0.0.0", 42007)}), publish_mode=mode)
    assert s["endpoint_spec"] == {
        "Mode": endpoint_mode,
        "Ports": [{"Protocol": "tcp", "TargetPort": 2222, "PublishedPort": 42007, "PublishMode": mode}],
    }


def test_placement_constraints_are_checked_and_kept():
    s = spec(constraints=["node.labels.gpu-model == a100", "node.role!=manager"])
    assert s["task_template"]["Placement"]["Constraints"] == ["node.labels.gpu-model == a100", "node.role!=manager"]


@pytest.mark.parametrize(
    "constraint", ["rm -rf /", "node.labels.x", "node.labels.x == ", "user == root", "node.id == a; b", 7]
)
def test_bad_constraints_are_refused_with_a_reason(constraint):
    with pytest.raises(ValueError, match="placement constraint"):
        swarm.check_constraint(constraint)


def test_profiles_check_their_placement():
    with pytest.raises(ValueError, match=r"profile_list entry 1 \(p\): placement constraint"):
        load_profiles([{"slug": "p", "placement": ["anywhere"]}])
    with pytest.raises(ValueError, match="must be a list"):
        load_profiles([{"slug": "p", "placement": "node.hostname == a"}])
    assert load_profiles([{"slug": "p", "placement": [" node.hostname == a "]}])[0].placement == ("node.hostname == a",)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ContainerSpec": {"CapabilityAdd": ["CAP_SYS_ADMIN"]}}, "capabilities"),
        ({"ContainerSpec": {"CapabilityAdd": ["ALL"]}}, "capabilities"),
        ({"ContainerSpec": {"CapabilityAdd": ["DAC_READ_SEARCH"]}}, "capabilities"),
        ({"ContainerSpec": {"CapabilityAdd": ["CAP_NET_ADMIN"]}}, "capabilities"),
        (
            {"ContainerSpec": {"Mounts": [{"Type": "bind", "Source": "/var/run", "Target": "/d"}]}},
            "Docker socket",
        ),
        ({"ContainerSpec": {"Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}}, "Docker socket"),
        ({"ContainerSpec": {"CapabilityDrop": []}}, "CapabilityDrop ALL"),
        ({"ContainerSpec": {"Privileges": {"NoNewPrivileges": False}}}, "NoNewPrivileges"),
        ({"ContainerSpec": {"Sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"}}}, "ip_unprivileged_port_start"),
        ({"ContainerSpec": {"Privileges": {"Seccomp": {"Mode": "unconfined"}}}}, "Seccomp"),
        ({"ContainerSpec": {"Privileges": {"AppArmor": {"Mode": "disabled"}}}}, "AppArmor"),
        ({"Networks": [{"Target": "host"}]}, "network 'host'"),
        ({"Resources": {"Reservations": {"Devices": [{"Driver": "nvidia"}]}}}, "device reservations"),
        (
            {"ContainerSpec": {"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/d"}]}},
            "Docker socket",
        ),
        ({"ContainerSpec": {"Mounts": [{"Type": "bind", "Source": "/proc", "Target": "/p"}]}}, "/proc is the host's"),
        ({"ContainerSpec": {"Privileges": {"Seccomp": {"Mode": "custom", "Profile": "{}"}}}}, "default profile"),
        ({"ContainerSpec": {"User": "0"}}, "ContainerSpec.User"),
        ({"ContainerSpec": {"Command": ["jupyterhub-singleuser"]}}, "ContainerSpec.Command"),
        ({"ContainerSpec": {"Env": ["LD_PRELOAD=/home/alice/x.so"]}}, "LD_PRELOAD"),
    ],
)
def test_extra_task_spec_cannot_undo_the_guarantees(extra, message):
    with pytest.raises(UnsafeConfiguration, match=message):
        spec(extra_task_spec=extra)


def test_extra_task_spec_is_merged():
    s = spec(extra_task_spec={"LogDriver": {"Name": "journald"}, "Resources": {"Limits": {"Pids": 100}}})
    assert s["task_template"]["LogDriver"] == {"Name": "journald"}
    assert s["task_template"]["Resources"]["Limits"]["Pids"] == 100


def test_device_requests_are_not_for_services():
    with pytest.raises(ValueError, match="generic resources"):
        spec(settings(device_requests=[{"Driver": "nvidia"}]))


def test_keeper_is_a_small_global_service_on_the_network():
    s = swarm.keeper_spec("devdock-network-keeper", "devdock/desktop:latest", "devdock", {"io.devdock.hub": "h"})
    assert s["mode"] == {"Global": {}}
    assert s["task_template"]["Networks"] == [{"Target": "devdock"}]
    assert s["task_template"]["ContainerSpec"]["Command"] == ["sleep", "infinity"]
    assert s["task_template"]["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert "Ports" not in s["endpoint_spec"]


# --- what Swarm reports ---------------------------------------------------------------------------

TASK = {
    "ID": "t1",
    "ServiceID": "s1",
    "NodeID": "n2",
    "Status": {"State": "rejected", "Err": "assigned node no longer meets constraints"},
    "NetworksAttachments": [
        {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.4/24"]},
        {"Network": {"Spec": {"Name": "devdock"}}, "Addresses": ["10.0.1.5/24"]},
    ],
    "GenericResources": [
        {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-b"}},
        {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-a"}},
        {"NamedResourceSpec": {"Kind": "FPGA", "Value": "F-1"}},
    ],
}


def test_task_address_on_the_users_network():
    assert swarm.task_address(TASK, "devdock") == "10.0.1.5"
    assert swarm.task_address(TASK, "other") is None
    assert swarm.task_address({}, "devdock") is None


@pytest.mark.parametrize("key", ["GenericResources", "AssignedGenericResources"])
def test_gpus_the_scheduler_gave_a_task(key):
    task = {key: TASK["GenericResources"]}
    assert swarm.task_generic_resources(task, "NVIDIA-GPU") == ["GPU-a", "GPU-b"]
    assert swarm.task_generic_resources(task, "FPGA") == ["F-1"]
    assert swarm.task_generic_resources({}, "NVIDIA-GPU") == []


def test_task_problem_is_swarms_own_words():
    assert swarm.task_problem(TASK) == "assigned node no longer meets constraints"
    assert swarm.task_problem({"Status": {"Message": "pending task scheduling"}}) == "pending task scheduling"
    assert swarm.task_problem({}) == ""


def node(resources=(), labels=None, state="ready", availability="active", addr="192.0.2.7"):
    return {
        "ID": "abcdefabcdef123",
        "Description": {"Hostname": "gpu02", "Resources": {"GenericResources": list(resources)}},
        "Spec": {"Labels": labels or {}, "Availability": availability},
        "Status": {"State": state, "Addr": addr},
    }


def test_node_gpus_named_and_counted():
    named = node([{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-x"}}])
    assert swarm.node_generic_resources(named, "NVIDIA-GPU") == ["GPU-x"]
    counted = node([{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}])
    assert swarm.node_generic_resources(counted, "NVIDIA-GPU") == [
        "abcdefabcdef-NVIDIA-GPU-0",
        "abcdefabcdef-NVIDIA-GPU-1",
    ]
    assert swarm.node_generic_resources(node(), "NVIDIA-GPU") == []


@pytest.mark.parametrize(
    ("kwargs", "usable"),
    [({}, True), ({"state": "down"}, False), ({"availability": "drain"}, False), ({"availability": "pause"}, False)],
)
def test_only_ready_active_nodes_count(kwargs, usable):
    assert swarm.node_usable(node(**kwargs)) is usable


def test_ssh_host_is_the_nodes_label_else_its_address():
    assert swarm.node_ssh_host(node(), "devdock.ssh-host") == "192.0.2.7"
    assert swarm.node_ssh_host(node(labels={"devdock.ssh-host": "gpu02.example.org"}), "devdock.ssh-host") == (
        "gpu02.example.org"
    )


def test_held_ports_of_every_service_with_their_owners():
    ours = {
        "Spec": {"Labels": {"io.devdock.owner": "alice", "io.devdock.server": "gpu"}},
        "Endpoint": {"Ports": [{"PublishedPort": 42001, "TargetPort": 2222}]},
    }
    foreign = {"Spec": {"Labels": {}}, "Endpoint": {"Ports": [{"PublishedPort": 8080}, {"TargetPort": 53}]}}
    not_yet_allocated = {"Spec": {"EndpointSpec": {"Ports": [{"PublishedPort": 42002}]}}}
    assert swarm.held_service_ports([ours, foreign, not_yet_allocated]) == {42001: "alice/gpu", 8080: None, 42002: None}


def test_read_only_binds_stay_read_only_with_options():
    mounts = spec(settings(binds={"/data": {"bind": "/data", "mode": "ro,z"}}))["task_template"]["ContainerSpec"]
    assert mounts["Mounts"][0]["ReadOnly"] is True


def test_gpus_by_node_counts_what_tasks_hold():
    def named(*ids):
        return [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": i}} for i in ids]

    n1 = node(named("A", "B"))
    n2 = {**node([{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]), "ID": "second-node-id"}
    drained = {**node(named("C"), availability="drain"), "ID": "drained-node"}
    tasks = [
        {"NodeID": n1["ID"], "DesiredState": "running", "GenericResources": named("B")},
        {"NodeID": n1["ID"], "DesiredState": "shutdown", "GenericResources": named("A")},  # on its way out
        {"NodeID": "second-node-id", "DesiredState": "running",
         "GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}]},
    ]  # fmt: skip
    view = swarm.gpus_by_node([n1, n2, drained], tasks, "NVIDIA-GPU")
    assert set(view) == {n1["ID"], "second-node-id"}  # a drained node offers nothing
    assert view[n1["ID"]].held == ["B"] and view[n1["ID"]].free == 1
    assert view["second-node-id"].free == 1 and len(view["second-node-id"].held) == 1


def node_gpus(node_id, ids, held=()):
    return swarm.NodeGPUs(node_id, f"host-{node_id}", list(ids), list(held))


TWO_NODES = {"a": node_gpus("a", ["g0", "g1"], ["g0"]), "b": node_gpus("b", ["g2", "g3", "g4"], ["g2"])}
# (id, view, GPUs wanted, home node, words of the refusal or "" when it fits)
GPU_FITS = [
    ("no-gpus-wanted", {}, 0, None, ""),
    ("fits-on-the-freest-node", TWO_NODES, 2, None, ""),
    ("more-than-any-one-node-has-free", TWO_NODES, 3, None, "the most free on any node is 2 (3 of 5 free"),
    ("cluster-without-gpus", {"a": node_gpus("a", [])}, 1, None, "The cluster has no GPUs"),
    ("home-node-fits", TWO_NODES, 1, "a", ""),
    ("home-node-full", TWO_NODES, 2, "a", "on node host-a, where your home is: 1 of 2 free, 2 needed"),
    ("home-node-too-small", TWO_NODES, 3, "a", "which has 2 GPUs, and this profile needs 3"),
    ("home-node-gone", TWO_NODES, 1, "c", "which has 0 GPUs"),
]


@pytest.mark.parametrize(("view", "wanted", "home", "words"), [c[1:] for c in GPU_FITS], ids=[c[0] for c in GPU_FITS])
def test_swarm_gpu_fit_is_decided_before_anything_is_created(view, wanted, home, words):
    refusal = swarm.gpu_refusal(view, wanted, home, f"host-{home}")
    assert (words in refusal) if words else refusal == "", refusal


def swarm_task(state, err="", desired="running"):
    return {"DesiredState": desired, "Status": {"State": state, "Err": err}}


# (id, newest task, seconds since (re)created, seconds with no node, replacements so far, SSH port, next step)
NO_NODE_YET = swarm_task("pending", "no suitable node (insufficient resources)")
START_STEPS = [
    ("running", swarm_task("running"), 1, 0, 0, True, swarm.RUNNING),
    ("preparing", swarm_task("preparing"), 1, 0, 0, True, swarm.WAIT),
    ("no-task-yet", None, 2, 0, 0, True, swarm.WAIT),
    ("service-gone", None, 11, 0, 0, True, swarm.GONE),
    ("no-node-for-a-moment", NO_NODE_YET, 5, 5, 0, True, swarm.WAIT),
    ("no-node-for-long", NO_NODE_YET, 12, 11, 0, True, swarm.NO_NODE_FAIL),
    ("enforcer-dropped-it", swarm_task("rejected", swarm.ENFORCER_REJECTED), 1, 0, 0, True, swarm.RECREATE),
    ("enforcer-too-often", swarm_task("rejected", swarm.ENFORCER_REJECTED), 1, 0, 3, True, swarm.FAILED),
    ("ssh-port-taken", swarm_task("rejected", "bind: address already in use"), 1, 0, 0, True, swarm.NEW_SSH_PORT),
    ("port-taken-without-ssh", swarm_task("rejected", "bind: address already in use"), 1, 0, 0, False, swarm.FAILED),
    ("failed", swarm_task("failed", "exit 1"), 1, 0, 0, True, swarm.FAILED),
]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "since", "no_node", "replaced", "ssh", "expected"),
    [c[1:] for c in START_STEPS],
    ids=[c[0] for c in START_STEPS],
)
def test_swarm_start_step_follows_the_task(task, since, no_node, replaced, ssh, expected):
    assert swarm.start_step(task, since, no_node, replaced, ssh) == expected


POLLS = [
    ("running", swarm_task("running"), None),
    ("starting", swarm_task("starting"), None),
    ("gone", None, 0),
    ("failed", swarm_task("failed", "exit 1"), "task failed: exit 1"),
    ("drained", swarm_task("running", desired="shutdown"), "task running, Swarm wants it shutdown: "),
]


@pytest.mark.parametrize(("task", "expected"), [c[1:] for c in POLLS], ids=[c[0] for c in POLLS])
def test_swarm_poll_answer_from_the_newest_task(task, expected):
    assert swarm.task_poll(task) == expected

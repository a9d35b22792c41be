"""A real Docker Swarm on this machine for the swarm tier: made, grown and torn down by the test run.

- The local engine becomes a single-node swarm, advertising the gateway address of a bridge network the
  run creates (a second node can reach that address; nothing outside this machine is involved).
- The hub runs where it runs in production: attached to the users' overlay network. Here it is the test's
  own JupyterHub process, started inside the network namespace of a small "anchor" container on that
  network (``nsenter -n``), so that the code under test is this checkout's, not an image's.
- A second node is a Docker engine in a container (images/swarm-node), on the run's bridge network,
  advertising two fake GPUs as generic resources; it joins as a worker and gets the desktop image loaded.
  Its data root is a volume kept between runs (``NODE_VOLUME``), as the fresh tier keeps its engine's: a warm
  machine's node already holds the desktop image, and only what an earlier run left there besides (swarm
  membership, containers, volumes, networks, other images) is removed first.

Everything carries the run's label and is removed at the end; the swarm is left (``leave --force``) only if
this run created it. If the engine is already part of a swarm, the tier fails loudly instead of touching it.
"""

from __future__ import annotations

import subprocess
import time

import docker

from tests.harness import IMAGE, PREFIX, RUN_ID, RUN_LABEL

NODE_IMAGE = "devdock/swarm-node:latest"
#: The desktop image as this tier uses it, pinned at the tier's start: the compose tier, running beside it, rebuilds
#: ``devdock/desktop:latest`` with its project's labels (a new image ID for the same layers), and a hub that resolves
#: the image by ID (as on a Swarm) would then name an ID the second node has never seen.
SWARM_IMAGE = f"devdock/desktop:swarm-{RUN_ID}"
TEST_SWARM_LABEL = "io.devdock.test-swarm"
FAKE_GPUS = ("GPU-fake-0a", "GPU-fake-1b")
#: The second engine's data root, kept between runs: loading the 2 GB desktop image into a new engine
#: (``docker save | docker load``) took most of the tier's set-up (measured: 159 s of a 249 s module on a loaded
#: 2-core machine). Not labelled with a run's id, so that no run's cleanup removes it.
NODE_VOLUME = "devdock-test-swarm-node-data"
GPU_KIND = "NVIDIA-GPU"
#: What the inner engine needs of a privileged container, minus CAP_SYS_RESOURCE (some hosts, this CI VM
#: among them, do not have it to give: ``--privileged`` fails there).
_NODE_CAPS = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE NET_BIND_SERVICE "
    "NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT "
    "SYS_ADMIN SYS_BOOT SYS_NICE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
    "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ"
).split()


def wait_for(check, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise RuntimeError(f"{what} not after {timeout} s (last: {last!r})")


def idle_service(client: docker.DockerClient, name: str, labels: dict | None = None, **kwargs):
    """A service of ``sleep`` tasks from the desktop image, given by ID so that no node asks a registry."""
    return client.services.create(
        client.images.get(SWARM_IMAGE).id, ["sleep", "infinity"], name=f"{name}-{RUN_ID}",
        labels={RUN_LABEL: RUN_ID, **(labels or {})}, **kwargs,
    )  # fmt: skip


def service_of(client, name: str, server: str = ""):
    services = client.services.list(
        filters={"label": [f"{RUN_LABEL}={RUN_ID}", f"io.devdock.owner={name}", f"io.devdock.server={server}"]}
    )
    assert len(services) <= 1, services
    return services[0] if services else None


class Cluster:
    def __init__(self, client: docker.DockerClient):
        self.client = client
        self.bridge_name = f"{PREFIX}-swarm"
        self.overlay = f"{PREFIX}-users"
        self.anchor_name = f"{PREFIX}-hub"
        self.node_name = f"{PREFIX}-node2"
        self.created_swarm = False
        self.node2: str = ""  # its Swarm node id
        self.node2_addr: str = ""
        self.node2_hostname = "devdock-node2"

    # --- the single-node swarm ---------------------------------------------------------------

    def up(self) -> None:
        state = self.client.info().get("Swarm", {}).get("LocalNodeState")
        if state == "active" and self._left_by_an_earlier_run():
            self.client.swarm.leave(force=True)
            state = "inactive"
        if state not in ("inactive", None):
            raise RuntimeError(
                f"This engine is already in a swarm ({state}); the swarm tier makes and removes its own. "
                "Leave it first (docker swarm leave --force) on a machine where that is safe."
            )
        self.client.images.get(IMAGE).tag(*SWARM_IMAGE.split(":"))
        bridge = self.client.networks.create(self.bridge_name, driver="bridge", labels={RUN_LABEL: RUN_ID})
        bridge.reload()
        self.gateway = bridge.attrs["IPAM"]["Config"][0]["Gateway"]
        self.client.swarm.init(
            advertise_addr=self.gateway, listen_addr=f"{self.gateway}:2377", labels={TEST_SWARM_LABEL: "true"}
        )
        self.created_swarm = True
        self.manager = self.client.info()["Swarm"]["NodeID"]
        self.client.networks.create(
            self.overlay, driver="overlay", attachable=True, labels={RUN_LABEL: RUN_ID, "io.devdock.managed": "true"}
        )
        # The anchor: a network namespace on the bridge (reachable from the tests) and the overlay.
        anchor = self.client.containers.run(
            SWARM_IMAGE, ["sleep", "infinity"], entrypoint=[], name=self.anchor_name, detach=True,
            network=self.bridge_name, labels={RUN_LABEL: RUN_ID},
        )  # fmt: skip
        self.client.networks.get(self.overlay).connect(anchor)
        anchor.reload()
        networks = anchor.attrs["NetworkSettings"]["Networks"]
        self.hub_address = networks[self.bridge_name]["IPAddress"]
        self.hub_overlay_address = networks[self.overlay]["IPAddress"]
        self.anchor_pid = anchor.attrs["State"]["Pid"]

    def _left_by_an_earlier_run(self) -> bool:
        """A swarm this tier made in a run that was killed before its teardown (only those are left)."""
        try:
            labels = self.client.swarm.attrs.get("Spec", {}).get("Labels") or {}
        except docker.errors.APIError:
            return False  # a worker of someone else's swarm
        return labels.get(TEST_SWARM_LABEL) == "true"

    def hub_settings(self) -> dict:
        """Hub(...) keyword arguments for a hub inside the anchor's network namespace."""
        return {
            "host": self.hub_address,
            "command_prefix": ["nsenter", "-t", str(self.anchor_pid), "-n"],
            "DEVDOCK_SPAWNER": "devdock-swarm",
            "DEVDOCK_NETWORK": self.overlay,
            "DEVDOCK_HUB_IP": "0.0.0.0",
            "DEVDOCK_HUB_CONNECT_IP": self.hub_overlay_address,
            # Swarm publishes on every address of a node; a loopback-only setting would be refused.
            "DEVDOCK_SSH_BIND": "0.0.0.0",
            # Nothing outside this machine: by ID, the nodes' Swarm agents do not try a registry first.
            "DEVDOCK_SWARM_IMAGE_BY_ID": "1",
            "DEVDOCK_IMAGE": SWARM_IMAGE,
        }

    # --- the second node ---------------------------------------------------------------------

    def add_node(self) -> None:
        """Start a Docker engine in a container, with fake GPUs, and join it to the swarm as a worker."""
        args = [f"--node-generic-resource={GPU_KIND}={gpu}" for gpu in FAKE_GPUS]
        api = self.client.api
        # A node of a run that was killed before its teardown may still run on the kept data root: one engine on it.
        for stale in self.client.containers.list(all=True, filters={"volume": NODE_VOLUME}):
            stale.remove(force=True)
        host_config = api.create_host_config(
            network_mode=self.bridge_name, cap_add=_NODE_CAPS,
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            device_cgroup_rules=["a *:* rwm"], tmpfs={"/run": ""},
            binds={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                   NODE_VOLUME: {"bind": "/var/lib/docker", "mode": "rw"}},
        )  # fmt: skip
        # What `--security-opt systempaths=unconfined` does: the inner engine writes /proc/sys (forwarding).
        host_config.update(MaskedPaths=[], ReadonlyPaths=[])
        created = api.create_container(
            NODE_IMAGE, args, name=self.node_name, hostname=self.node2_hostname, labels={RUN_LABEL: RUN_ID},
            host_config=host_config,
        )  # fmt: skip
        api.start(created["Id"])
        node = self.client.containers.get(created["Id"])
        wait_for(lambda: node.exec_run(["docker", "info"]).exit_code == 0, 60, "the second engine answering")
        self._forget_earlier_runs(node)
        node.reload()
        self.node2_addr = node.attrs["NetworkSettings"]["Networks"][self.bridge_name]["IPAddress"]
        token = self.client.swarm.attrs["JoinTokens"]["Worker"]
        joined = node.exec_run(
            ["docker", "swarm", "join", "--token", token, "--advertise-addr", self.node2_addr, f"{self.gateway}:2377"]
        )
        assert joined.exit_code == 0, joined.output.decode()
        self.node2 = wait_for(lambda: self._node_id(self.node2_hostname), 30, "the second node in the swarm")
        # The image, from this engine: no registry is involved (kept from an earlier run when it is the same).
        wanted = self.client.images.get(SWARM_IMAGE).id
        if not self._node_has_image(wanted):
            save = subprocess.Popen(["docker", "save", SWARM_IMAGE], stdout=subprocess.PIPE)
            load = subprocess.run(
                ["docker", "exec", "-i", self.node_name, "docker", "load", "-q"], stdin=save.stdout, capture_output=True
            )
            save.wait()
            assert load.returncode == 0 and save.returncode == 0, load.stderr.decode()
        assert self._node_has_image(wanted)
        # A node label for profiles to place GPU servers by (set before any task runs there).
        node_obj = self.client.nodes.get(self.node2)
        spec = node_obj.attrs["Spec"]
        spec.setdefault("Labels", {})["gpu-model"] = "fake"
        node_obj.update(spec)

    def _forget_earlier_runs(self, node) -> None:
        """Leave an earlier run's swarm, and remove what its servers left on the kept data root: containers,
        volumes (node-local homes), networks and every image but this run's desktop image. The node starts as a new
        engine would, with at most that image."""
        script = (
            "docker swarm leave --force >/dev/null 2>&1; "
            "docker ps -aq | xargs -r docker rm -f >/dev/null; "
            "docker volume ls -q | xargs -r docker volume rm -f >/dev/null; "
            "docker network prune -f >/dev/null; "
            f"docker images -q --no-trunc | sort -u | grep -vx '{self.client.images.get(SWARM_IMAGE).id}' "
            "| xargs -r docker rmi -f >/dev/null; "
            "docker ps -aq | wc -l; docker volume ls -q | wc -l; docker images -q | sort -u | wc -l"
        )
        result = node.exec_run(["sh", "-c", script])
        left = result.output.decode().split()
        assert result.exit_code == 0 and left[:2] == ["0", "0"] and int(left[2]) <= 1, result.output.decode()

    def _node_has_image(self, image_id: str) -> bool:
        """Whether the second engine holds the image ``image_id`` (under any tag, or none)."""
        found = self.client.containers.get(self.node_name).exec_run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", image_id]
        )
        return found.exit_code == 0 and found.output.decode().strip() == image_id

    def _node_id(self, hostname: str) -> str:
        for node in self.client.nodes.list():
            if node.attrs["Description"]["Hostname"] == hostname and node.attrs["Status"]["State"] == "ready":
                return node.id
        return ""

    def node_exec(self, *command: str) -> str:
        """Run a command in the second node's engine container (its own ``docker`` CLI)."""
        result = self.client.containers.get(self.node_name).exec_run(list(command))
        assert result.exit_code == 0, result.output.decode()
        return result.output.decode()

    # --- teardown ----------------------------------------------------------------------------

    def down(self) -> None:
        """What the tier made, and nothing else: the same worker's other hubs (the session's hub above all) keep
        their containers, volumes and network, which the run's cleanup removes at its end."""
        selector = {"label": f"{RUN_LABEL}={RUN_ID}"}
        for service in self.client.services.list(filters=selector):
            service.remove()
        for c in self.client.containers.list(all=True, filters=selector):
            if c.name in (self.anchor_name, self.node_name) or "com.docker.swarm.service.id" in c.labels:
                try:
                    c.remove(force=True, v=True)
                except docker.errors.NotFound:
                    pass  # a task's container, removed by Swarm with its service meanwhile
        if self.created_swarm:
            self.client.swarm.leave(force=True)
        try:
            self.client.images.remove(SWARM_IMAGE, noprune=True)  # the tag; the image stays while others name it
        except docker.errors.APIError:
            pass
        for network in self.client.networks.list(names=[self.bridge_name, self.overlay]):
            if network.name in (self.bridge_name, self.overlay):  # the filter matches prefixes too
                try:
                    network.remove()
                except docker.errors.APIError:
                    pass

"""A real JupyterHub + configurable-http-proxy + DevDockSpawner on the local Docker engine, for tests.

The hub runs from the project's own ``jupyterhub_config.py``, configured through the same environment
variables a site uses. Everything the run creates carries the label ``io.devdock.test-run=<id>`` and
is removed at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker
import requests
import websocket

from devdock_spawner.container import network_spec

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
IMAGE = os.environ.get("DEVDOCK_TEST_IMAGE", "devdock/desktop:latest")
RUN_ID = secrets.token_hex(4)
RUN_LABEL = "io.devdock.test-run"
#: Container and volume names start with this, so that two test runs on one engine never collide.
PREFIX = f"devdock-t{RUN_ID}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_localhost_subdomains() -> None:
    """Resolve ``*.localhost`` to loopback in this test process, as browsers do by themselves (RFC 6761 6.3).

    Users' servers live on their own origins (``alice.localhost:8000``); glibc resolves only ``localhost`` from
    /etc/hosts, so Python's HTTP and websocket clients get the same answer Chromium gives, and nothing else changes.
    """
    if getattr(socket.getaddrinfo, "devdock_localhost", False):
        return
    original = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.lower().rstrip(".").endswith(".localhost"):
            host = "127.0.0.1"
        return original(host, *args, **kwargs)

    getaddrinfo.devdock_localhost = True
    socket.getaddrinfo = getaddrinfo


def docker_client() -> docker.DockerClient:
    """The engine, or a loud failure: a missing engine never turns into a passing (or skipped) test."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure here means "no engine"
        raise RuntimeError(
            f"No Docker engine answers ({e}). Run the README's test command (scripts/test.sh), which "
            "installs and starts one."
        ) from e
    return client


def require_image(client: docker.DockerClient, image: str = IMAGE) -> None:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as e:
        raise RuntimeError(f"Image {image} is missing: run scripts/build-images.sh") from e


class Hub:
    """One JupyterHub process (and the proxy it starts), restartable on the same database."""

    def __init__(
        self,
        client: docker.DockerClient,
        data_dir: Path,
        config: Path | None = None,
        extra_config: str = "",
        subdomains: bool = False,
        host: str = "127.0.0.1",
        command_prefix: list[str] | None = None,
        desktop_prestart: bool = False,
        **env_overrides: str,
    ):
        """``host``: the address the hub and the proxy's API listen on (loopback unless the hub runs in
        another network namespace); ``command_prefix``: what runs the hub, e.g. ``nsenter -t PID -n``.

        ``desktop_prestart``: the shipped default starts each server's desktop (TigerVNC and the XFCE session) with
        the server; that costs a start 5.5 CPU seconds instead of 1.8 (measured on the suite's 2-core machine), and
        most tests never open the desktop. So the harness's hubs start it when it is first opened, the path a burst
        of starts takes too (``desktop_prestart_max_spawns``); the desktop tests and the browser tier ask for the
        shipped default. A hub from a ``config`` of its own (a site's, an older release's) gets nothing added."""
        self.client = client
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (desktop_prestart or config):
            extra_config = "c.DevDockSpawner.desktop_prestart = False\n" + extra_config
        self.config = config or ROOT / "jupyterhub_config.py"
        if extra_config:
            # The shipped config, then the test's additions (a real config file, loaded the real way).
            extra = data_dir / "extra_config.py"
            extra.write_text(f"c = get_config()\nload_subconfig({str(self.config)!r})\n{extra_config}\n")
            self.config = extra
        self.port = free_port()
        self.proxy_api_port = free_port()
        self.host = host
        self.command_prefix = list(command_prefix or [])
        self.url = f"http://{host}:{self.port}"
        self.service_token = secrets.token_hex(16)
        self.metrics_token = secrets.token_hex(16)
        self.proxy_token = secrets.token_hex(16)
        self.password = secrets.token_urlsafe(12)
        self.network = f"devdock-test-{RUN_ID}"
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "hub.log"
        self._ensure_network()
        self.env = {
            **os.environ,
            "DEVDOCK_BIND_URL": self.url,
            "DEVDOCK_HUB_IP": self.gateway,
            "DEVDOCK_HUB_PORT": str(free_port()),
            "DEVDOCK_PROXY_API_URL": f"http://{host}:{self.proxy_api_port}",
            "CONFIGPROXY_AUTH_TOKEN": self.proxy_token,
            "DEVDOCK_NETWORK": self.network,
            "DEVDOCK_IMAGE": IMAGE,
            "DEVDOCK_PREFIX": PREFIX,
            "DEVDOCK_HUB_ID": f"{RUN_ID}-{data_dir.name}",
            "DEVDOCK_AUTHENTICATOR": "dummy",
            "DEVDOCK_DUMMY_PASSWORD": self.password,
            "DEVDOCK_ADMIN_USERS": "admin",
            "DEVDOCK_SERVICE_TOKEN": self.service_token,
            "DEVDOCK_METRICS_TOKEN": self.metrics_token,
            "DEVDOCK_EXTRA_LABELS": f"{RUN_LABEL}={RUN_ID}",
            "DEVDOCK_DATA_DIR": str(data_dir),
            "DEVDOCK_CLEANUP_SERVERS": "0",
            "DEVDOCK_SSH_BIND": "127.0.0.1",
            "DEVDOCK_SSH_HOST": "127.0.0.1",
            "DEVDOCK_ACTIVITY_INTERVAL": "4",
            # Plain home volumes, except where a test asks for homes with a size limit (tests/integration/
            # test_home_size.py); the compose tier runs the shipped default.
            "DEVDOCK_HOME_SIZE": "0",
            # A hub that dies of a signal leaves every thread's Python stack in its log.
            "PYTHONFAULTHANDLER": "1",
            # *.localhost names resolve to loopback; tests send the Host header to 127.0.0.1. Most of the suite
            # drives a hub at 127.0.0.1 with plain HTTP clients, through the documented opt-out of one origin per
            # user; the shipped default (an origin per user) is what tests/e2e/test_origins.py, tests/compose/
            # and the README tier run.
            **(
                {"DEVDOCK_SUBDOMAIN_HOST": f"http://devdock.localhost:{self.port}"}
                if subdomains
                else {"DEVDOCK_SINGLE_ORIGIN": "1"}
            ),
            **env_overrides,
        }

    def _ensure_network(self) -> None:
        try:
            net = self.client.networks.get(self.network)
        except docker.errors.NotFound:
            spec = network_spec(self.network, isolated=True, labels={RUN_LABEL: RUN_ID})
            net = self.client.networks.get(self.client.api.create_network(**spec)["Id"])
        net.reload()
        self.gateway = net.attrs["IPAM"]["Config"][0]["Gateway"]

    # --- process -----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "jupyterhub", "-f", str(self.config)],
            cwd=self.data_dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterHub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"JupyterHub did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the hub and the proxy it started (user containers keep running)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no hub log)"

    # --- REST API ----------------------------------------------------------------------------

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token or self.service_token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kwargs)

    def create_user(self, name: str) -> None:
        r = self.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text

    def token(self, name: str) -> str:
        self.create_user(name)
        r = self.api("POST", f"/users/{name}/tokens", json={"note": "devdock tests", "expires_in": 3600})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def browser_session(self, name: str) -> requests.Session:
        """A logged-in cookie session, like a browser's (hub pages accept no API tokens)."""
        session = requests.Session()
        login = session.get(f"{self.url}/hub/login", timeout=30)
        r = session.post(
            f"{self.url}/hub/login",
            data={"username": name, "password": self.password, "_xsrf": xsrf_from(login.text)},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 302, f"login as {name} failed: {r.status_code}"
        return session

    def save_ssh_keys(self, name: str, keys: str) -> requests.Response:
        """Save ``keys`` as ``name``'s SSH keys the only way there is: their own ``/hub/ssh`` page."""
        session = self.browser_session(name)
        page = session.get(f"{self.url}/hub/ssh", timeout=30)
        r = session.post(f"{self.url}/hub/ssh", data={"keys": keys, "_xsrf": xsrf_from(page.text)}, timeout=30)
        assert r.status_code == 200, f"saving {name}'s keys: {r.status_code} {r.text[-500:]}"
        return r

    def user_model(self, name: str) -> dict:
        r = self.api("GET", f"/users/{name}?include_stopped_servers=1")
        assert r.status_code == 200, r.text
        return r.json()

    def server_state(self, name: str, server: str = "") -> dict:
        """The spawner state the hub keeps for a server (admins see it too)."""
        return self.user_model(name)["servers"].get(server, {}).get("state") or {}

    def server_url(self, name: str, server: str = "") -> str:
        return f"{self.url}/user/{name}/{server + '/' if server else ''}"

    def spawn(self, name: str, server: str = "", options: dict | None = None, timeout: float = 180) -> dict:
        """Start a server through the REST API and wait until the hub says it is ready."""
        self.create_user(name)
        path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
        r = self.api("POST", path, json=options or {})
        assert r.status_code in (201, 202), f"spawn {name}/{server}: {r.status_code} {r.text}"
        return self.wait_ready(name, server, timeout)

    def ensure_running(self, name: str, server: str = "") -> dict:
        self.create_user(name)
        info = self.api("GET", f"/users/{name}").json()["servers"].get(server)
        if info and (info.get("ready") or info.get("pending") == "spawn"):
            return self.wait_ready(name, server)
        return self.spawn(name, server)

    def wait_ready(self, name: str, server: str = "", timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        info: dict = {}
        while time.monotonic() < deadline:
            info = self.api("GET", f"/users/{name}").json()["servers"].get(server, {})
            if info.get("ready"):
                return info
            if not info.get("pending") and not info.get("ready"):
                raise AssertionError(f"server {name}/{server} is neither pending nor ready: {info}")
            time.sleep(0.5)
        raise AssertionError(f"server {name}/{server} not ready after {timeout}s: {info}")

    def stop_server(self, name: str, server: str = "", timeout: float = 60, by: str = "") -> None:
        """Stop a server through the REST API: as the harness's service (as an admin would), or as the user ``by``."""
        path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
        r = self.api("DELETE", path, token=self.token(by) if by else None)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server not in self.api("GET", f"/users/{name}").json()["servers"]:
                return
            time.sleep(0.3)
        raise AssertionError(f"server {name}/{server} still listed {timeout}s after stop")

    def metric(self, name: str, missing: float | None = None) -> float:
        """One sample of the hub's Prometheus metrics, e.g. ``devdock_gpus_allocated`` or
        ``devdock_spawn_phase_seconds_count{phase="server"}`` (fails if it is not there, unless ``missing`` is
        given: then that)."""
        headers = {"Authorization": f"token {self.service_token}"}
        text = requests.get(f"{self.url}/hub/metrics", headers=headers, timeout=30).text
        match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
        if not match and missing is not None:
            return missing
        assert match, f"{name} not in /hub/metrics"
        return float(match.group(1))

    def proxy_routes(self) -> dict:
        r = requests.get(
            f"http://{self.host}:{self.proxy_api_port}/api/routes",
            headers={"Authorization": f"token {self.proxy_token}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    # --- the user's container ----------------------------------------------------------------

    def container(self, name: str, server: str = ""):
        containers = self.client.containers.list(
            all=True,
            filters={"label": [f"{RUN_LABEL}={RUN_ID}", f"io.devdock.owner={name}", f"io.devdock.server={server}"]},
        )
        assert len(containers) <= 1, containers
        return containers[0] if containers else None


def keygen(directory: Path, name: str, key_type: str = "ed25519", bits: int | None = None) -> tuple[str, str]:
    """A new key pair: (private key path, public key line)."""
    path = directory / name
    cmd = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", f"{name}@tests", "-f", str(path)]
    if bits:
        cmd += ["-b", str(bits)]
    subprocess.run(cmd, check=True)
    return str(path), (directory / f"{name}.pub").read_text().strip()


def ssh(
    port: int,
    login: str,
    key: str | None,
    command: str = "whoami",
    *options: str,
    host: str = "127.0.0.1",
    timeout: float = 30,
) -> subprocess.CompletedProcess:
    """The real OpenSSH client, non-interactive (no passwords, no host key prompts)."""
    args = [
        "ssh", "-p", str(port),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if key:
        args += ["-i", key, "-o", "IdentitiesOnly=yes"]
    args += [*options, f"{login}@{host}", command]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


class Gateway:
    """devdock's SSH gateway container (images/ssh-gateway): on the host's network like the hub, as compose runs it,
    or in another container's network namespace (``network_mode="container:NAME"``, the swarm tier's anchor)."""

    def __init__(self, client, hub_url: str, token: str, port: int, keys_dir, network_mode: str = "host",
                 host: str = "127.0.0.1", environment: dict | None = None, volumes: dict | None = None):  # fmt: skip
        """``environment``: more of the gateway's settings; ``volumes``: more bind mounts (docker-py's form)."""
        self.client, self.port, self.keys_dir = client, port, keys_dir
        self.network_mode, self.host = network_mode, host
        self.name = f"devdock-test-gateway-{RUN_ID}-{port}"
        self.environment = {
            "DEVDOCK_SSH_GATEWAY_HUB_API": f"{hub_url}/hub/api",
            "DEVDOCK_SSH_GATEWAY_TOKEN": token,
            "DEVDOCK_SSH_GATEWAY_PORT": str(port),
            "DEVDOCK_SSH_GATEWAY_BIND": host,
            **(environment or {}),
        }
        self.volumes = volumes or {}
        self.container = None

    def start(self):
        self.container = self.client.containers.run(
            "devdock/ssh-gateway:latest",
            name=self.name,
            detach=True,
            network_mode=self.network_mode,
            environment=self.environment,
            volumes={str(self.keys_dir): {"bind": "/var/lib/devdock-gateway", "mode": "rw"}, **self.volumes},
            labels={RUN_LABEL: RUN_ID},
            # As compose and scripts/up.sh run it: a read-only root, and tmpfs folders of bounded size.
            read_only=True,
            tmpfs={"/tmp": "size=16m", "/run/devdock-gateway": "size=16m"},
            cap_drop=["ALL"],
            cap_add=["CHOWN", "SETUID", "SETGID", "FOWNER", "DAC_OVERRIDE"],
            security_opt=["no-new-privileges:true"],
        )
        self.wait()

    def wait(self, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    if s.recv(64).startswith(b"SSH-2.0-OpenSSH"):
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the gateway did not answer: {self.container.logs().decode()[-2000:]}")

    def restart(self):
        self.container.restart(timeout=10)
        self.wait()

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def remove(self):
        if self.container is not None:
            self.container.remove(force=True)


def ssh_client_config(folder: Path, name: str, blocks: str, known_hosts: str, key: str) -> tuple[str, dict]:
    """An ssh_config of the blocks ``/hub/ssh`` shows (as they are), the user's key and the page's known_hosts
    lines, strict host-key checking on; returns (config path, environment for ``subprocess``).

    The blocks' ProxyCommand runs a plain ``ssh``, which reads ``~/.ssh/config``, where a user puts them; in the
    returned environment an ``ssh`` first on PATH reads this file instead (the system's ssh with ``-F``).
    """
    known = folder / f"known_hosts-{name}"
    known.write_text(known_hosts)
    config = folder / f"ssh_config-{name}"
    config.write_text(
        f"{blocks}\nHost *\n    IdentityFile {key}\n    IdentitiesOnly yes\n    BatchMode yes\n"
        f"    StrictHostKeyChecking yes\n    UserKnownHostsFile {known}\n    ConnectTimeout 15\n    LogLevel ERROR\n"
    )
    wrapper = folder / f"bin-{name}" / "ssh"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F "{config}" "$@"\n')
    wrapper.chmod(0o755)
    return str(config), {**os.environ, "PATH": f"{wrapper.parent}:{os.environ['PATH']}"}


def xsrf_from(html: str) -> str:
    match = re.search(r'name="_xsrf" value="([^"]+)"', html) or re.search(r'xsrf_token: "([^"]+)"', html)
    assert match, "no _xsrf field in the page"
    return match.group(1)


def ws_connect(url: str, token: str | None = None, **kwargs) -> websocket.WebSocket:
    headers = [f"Authorization: token {token}"] if token else []
    return websocket.create_connection(url.replace("http://", "ws://"), header=headers, timeout=60, **kwargs)


def ws_handshake_status(url: str, token: str | None = None) -> int:
    """HTTP status of a websocket handshake: 101 when it was accepted."""
    try:
        ws = ws_connect(url, token)
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    ws.close()
    return 101


def assert_desktop_answers(server_url: str, token: str) -> None:
    """The desktop websocket, through whatever proxy ``server_url`` names, reaches a VNC server (RFB banner)."""
    ws = ws_connect(server_url + "desktop-websockify/", token)
    try:
        banner = ws.recv()
    finally:
        ws.close()
    assert re.fullmatch(rb"RFB 003\.00[3-8]\n", banner), banner


def run_in_terminal(server_url: str, token: str, command: str, expect: str, timeout: float = 20) -> str:
    """Open a JupyterLab terminal over its websocket, type ``command`` and read until ``expect``."""
    r = requests.post(f"{server_url}api/terminals", headers={"Authorization": f"token {token}"}, timeout=30)
    r.raise_for_status()
    name = r.json()["name"]
    ws = ws_connect(f"{server_url}terminals/websocket/{name}", token)
    try:
        ws.send(json.dumps(["stdin", command + "\r"]))
        output = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and expect not in output:
            ws.settimeout(max(0.1, deadline - time.monotonic()))
            message = json.loads(ws.recv())
            if message[0] == "stdout":
                output += message[1]
        return output
    finally:
        ws.close()
        requests.delete(f"{server_url}api/terminals/{name}", headers={"Authorization": f"token {token}"}, timeout=10)


def run_in_kernel(server_url: str, token: str, code: str, timeout: float = 120, kernel: str = "python3") -> dict:
    """Run ``code`` in a new kernel of the server, as a notebook cell would (the Jupyter messaging protocol over
    the kernel's websocket). Returns ``{"status": "ok"|"error", "stdout": str, "stderr": str, "error": str}``;
    the kernel is shut down afterwards."""
    import uuid

    headers = {"Authorization": f"token {token}"}
    r = requests.post(f"{server_url}api/kernels", json={"name": kernel}, headers=headers, timeout=60)
    r.raise_for_status()
    kernel_id = r.json()["id"]
    session, msg_id = uuid.uuid4().hex, uuid.uuid4().hex
    result = {"status": "", "stdout": "", "stderr": "", "error": ""}
    ws = ws_connect(f"{server_url}api/kernels/{kernel_id}/channels", token)
    try:
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "tests", "session": session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))  # fmt: skip
        deadline, idle = time.monotonic() + timeout, False
        while time.monotonic() < deadline:
            ws.settimeout(max(0.1, deadline - time.monotonic()))
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                result[content["name"]] += content["text"]
            elif kind == "error":
                result["error"] = f"{content['ename']}: {content['evalue']}"
            elif kind == "execute_reply":
                result["status"] = content["status"]
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
            # The reply comes on the shell channel and the output on IOPub, in no set order between them: the
            # cell is done when both the reply and IOPub's "idle" for it have come.
            if result["status"] and idle:
                return result
        raise AssertionError(f"the kernel did not finish within {timeout}s: {result}")
    finally:
        ws.close()
        requests.delete(f"{server_url}api/kernels/{kernel_id}", headers=headers, timeout=30)


def cleanup(client: docker.DockerClient) -> None:
    """Remove every container, volume and network this run labelled."""
    selector = {"label": f"{RUN_LABEL}={RUN_ID}"}
    for c in client.containers.list(all=True, filters=selector):
        c.remove(force=True, v=True)
    for v in client.volumes.list(filters=selector):
        v.remove(force=True)
    for n in client.networks.list(filters=selector):
        n.remove()
    remove_cloud_metadata_rules(f"devdock-test-{RUN_ID}")


def remove_cloud_metadata_rules(network_prefix: str) -> None:
    """Take the DOCKER-USER rules that this run's hubs added for its networks (block_cloud_metadata) off the host."""
    listing = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        if line.startswith("-A DOCKER-USER ") and f"no cloud metadata from {network_prefix}" in line:
            subprocess.run(["iptables", *shlex.split(line.replace("-A ", "-D ", 1))], capture_output=True)


def dump_diagnostics(client: docker.DockerClient, hubs: list[Hub], name: str) -> str:
    """Container logs, ``docker inspect`` and the log of each of ``hubs``, for a failed test (also saved in
    artifacts/)."""
    parts = []
    for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
        parts.append(f"=== docker logs {c.name}\n{c.logs(tail=60).decode(errors='replace')}")
        parts.append(f"=== docker inspect {c.name}\n{json.dumps(c.attrs, indent=1)[:6000]}")
    for hub in dict.fromkeys(hubs):  # each once, in order
        parts.append(f"=== hub log ({hub.log_path})\n{hub.log_tail(120)}")
    return save_failure_report(name, parts)


def save_failure_report(name: str, parts: list[str]) -> str:
    """Join a failed test's diagnostics, keep them in artifacts/failures/<name>.txt, and return them."""
    text = "\n".join(parts)
    out = ARTIFACTS / "failures"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.txt").write_text(text)
    return text


def put_files(container, folder: str, files: dict[str, bytes], owner: int | None = None) -> None:
    """Write ``files`` (a path under ``folder`` -> its bytes) into a container, owned by ``owner`` (a uid, for the
    user's own files) or by root."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            if owner is not None:
                info.uid = info.gid = owner
            tar.addfile(info, io.BytesIO(data))
    container.put_archive(folder, archive.getvalue())


@contextlib.contextmanager
def cdi_spec(name: str, spec: dict):
    """A CDI spec in /etc/cdi for as long as the block runs, one module at a time.

    The engine reads every spec of a kind together (``nvidia.com/gpu`` for all of devdock's): modules running side
    by side that write and remove their specs meanwhile take turns (a lock file), so that one module's spec
    coming or going never meets another's container creation.
    """
    import fcntl

    spec_file = Path("/etc/cdi") / f"{name}.json"
    spec_file.parent.mkdir(exist_ok=True)
    with open("/tmp/devdock-tests-cdi.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        spec_file.write_text(json.dumps(spec))
        try:
            yield spec_file
        finally:
            spec_file.unlink(missing_ok=True)


def make_device_nodes(folder: Path, count: int) -> list[str]:
    """Stand-in GPU device nodes (character devices 1:5, like /dev/zero) for a GPU-less engine."""
    nodes = [str(folder / f"nvidia{i}") for i in range(count)]
    for node in nodes:
        subprocess.run(["mknod", node, "c", "1", "5"], check=True)
    return nodes


STAND_IN_SMI = """#!/bin/sh
# A stand-in for nvidia-smi: prints what the test wrote, as nvidia-smi --format=csv,noheader,nounits does.
here=$(dirname "$0")
[ -e "$here/broken" ] && { echo "Failed to initialize NVML: Driver/library version mismatch" >&2; exit 9; }
case "$1" in
  --query-gpu=*) cat "$here/gpus.csv" ;;
  --query-compute-apps=*) cat "$here/apps.csv" ;;
  *) exit 2 ;;
esac
"""


class StandInGPUs:
    """A stand-in ``nvidia-smi`` for GPUs ``uuids`` (``script``), printing what the test writes, as a GPU would.

    Each run's GPUs get bus numbers of their own: the XIDs a test writes to the kernel log name no other hub's GPUs.
    """

    def __init__(self, folder: Path, uuids: list[str]):
        self.folder, self.uuids = folder, list(uuids)
        self.buses = [f"0000:{b:02x}:00" for b in random.sample(range(0x10, 0xF0), len(uuids))]
        self.script = folder / "nvidia-smi"
        self.script.write_text(STAND_IN_SMI)
        self.script.chmod(self.script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.gpus(util=(0, 0))
        self.apps([])

    def gpus(self, util=(0, 0), ecc=(0, 0), used=(0, 0)) -> None:
        """Each GPU's utilisation (%), uncorrectable ECC errors and memory used (MiB), in the uuids' order."""
        lines = [
            f"{uuid}, 0000{bus.upper()}.0, {util[i]}, {used[i]}, 16384, {ecc[i]}, No"
            for i, (uuid, bus) in enumerate(zip(self.uuids, self.buses, strict=True))
        ]
        (self.folder / "gpus.csv").write_text("\n".join(lines) + "\n")

    def xid(self, index: int, code: int, message: str) -> None:
        """The NVIDIA driver's XID line for GPU ``index``, written to the real kernel log (needs root)."""
        with open("/dev/kmsg", "w") as kmsg:
            kmsg.write(f"NVRM: Xid (PCI:{self.buses[index]}): {code}, pid='<unknown>', name=<unknown>, {message}\n")

    def apps(self, processes: list[tuple[str, int, int]]) -> None:
        (self.folder / "apps.csv").write_text("".join(f"{u}, {pid}, {mib}\n" for u, pid, mib in processes))

    def hub_config(self, nodes: list[str], profiles: list[dict]) -> str:
        """Config lines: these stand-in GPUs as device nodes, read by this nvidia-smi every second."""
        return (
            devices_mode_config(nodes, self.uuids)
            + f"c.DevDockSpawner.profile_list = {profiles!r}\n"
            + f"c.DevDockSpawner.gpu_monitor_command = [{str(self.script)!r}]\n"
            + "c.DevDockSpawner.usage_interval = 1\n"
        )

    def broken(self, broken: bool) -> None:
        flag = self.folder / "broken"
        flag.touch() if broken else flag.unlink(missing_ok=True)


def host_pid_of(container, marker: str) -> int:
    """Start ``sleep <marker>`` in the server as its user and return its PID on the host (``docker top``)."""
    container.exec_run(["sleep", marker], user="1000", detach=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        top = container.top()
        column = top["Titles"].index("PID")
        for row in top["Processes"]:
            if row[-1] == f"sleep {marker}":
                return int(row[column])
        time.sleep(0.3)
    raise AssertionError(f"sleep {marker} did not start in {container.name}")


def devices_mode_config(nodes: list[str], uuids: list[str]) -> str:
    """Config lines: an inventory of stand-in GPUs, handed out as device nodes (``gpu_mode = "devices"``)."""
    entries = [
        {"index": i, "uuid": uuid, "name": "Test GPU", "memory_mib": 1024, "device": node}
        for i, (uuid, node) in enumerate(zip(uuids, nodes, strict=True))
    ]
    return (
        f"c.DevDockSpawner.gpu_inventory = {entries!r}\n"
        'c.DevDockSpawner.gpu_mode = "devices"\n'
        "c.DevDockSpawner.gpu_common_devices = []\n"
        'c.DevDockSpawner.gpu_driver_dir = ""\n'
    )


@contextlib.contextmanager
def cdi_hub(client: docker.DockerClient, data_dir: Path, spec_name: str, spec: dict, inventory: list, profiles: list):
    """A started hub that hands out stand-in GPUs through the CDI spec ``spec`` (``gpu_mode = "cdi"``), with these
    profiles, for as long as the block runs (the spec written for as long too: :func:`cdi_spec`)."""
    extra = (
        f"c.DevDockSpawner.gpu_inventory = {inventory!r}\n"
        'c.DevDockSpawner.gpu_mode = "cdi"\n'
        f"c.DevDockSpawner.profile_list = {profiles!r}\n"
        "c.DevDockSpawner.gpu_queue = False\n"  # full GPUs are refused (waiting in line: test_gpu_queue_journey.py)
    )
    with cdi_spec(spec_name, spec):
        hub = Hub(client, data_dir, extra_config=extra)
        hub.start()
        try:
            yield hub
        finally:
            hub.stop()


CHROMIUM = os.environ.get("DEVDOCK_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium floods a closed network with connection attempts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium():
    """Debian's Chromium driven by Playwright (never a downloaded browser), closed on exit.

    Use it from a package-scoped fixture: a live sync Playwright keeps its event loop marked as running,
    which would break every later asyncio.run() in the same session (other tiers).
    """
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: scripts/test.sh installs Debian's package")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()

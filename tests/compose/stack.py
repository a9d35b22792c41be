"""The real compose stack (docker-compose.yml) brought up by the tests, and what they need to drive it.

One compose project per test run (``devdock-ci-<run id>``), on free loopback ports, with its own users network,
container-name prefix and SSH port window, so that runs on one engine never meet. Users' containers and homes
carry the harness's ``io.devdock.test-run`` label (through DEVDOCK_EXTRA_LABELS) and are removed at the end, as
are the project's containers and volumes (``down -v``) and the users network the hub created.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

from tests.harness import ARTIFACTS, ROOT, RUN_ID, RUN_LABEL, free_port, save_failure_report

COMPOSE_FILE = ROOT / "docker-compose.yml"
#: An override the site's devdock.env selects through COMPOSE_FILE (it labels the hub, so the tier can tell).
SITE_OVERRIDE = Path(__file__).resolve().parent / "site-override.yml"
SITE_ANNOUNCEMENT = "This hub reads its site folder."
SITE_QUOTAS = {"groups": {"devdock-users": {"gpu_hours": 500, "period": "week"}}}
SHOTS = ARTIFACTS / "screenshots" / "compose"
#: Variables a developer's shell may hold that must not leak into the stack under test.
_FOREIGN = re.compile(r"^(DEVDOCK_|OAUTH|CONFIGPROXY_|JUPYTERHUB_|COMPOSE_)")


def compose_command() -> list[str]:
    """``docker compose`` (Compose v2), as the README has it; a loud failure when it is missing or older."""
    if os.environ.get("DEVDOCK_COMPOSE"):
        return os.environ["DEVDOCK_COMPOSE"].split()
    result = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip().lstrip("v").startswith("2"):
        raise RuntimeError(
            f"Compose v2 (`docker compose`) is not installed ({result.stderr.strip()}): scripts/engine.sh installs it"
        )
    return ["docker", "compose"]


class Stack:
    def __init__(self, workdir: Path):
        self.project = f"devdock-ci-{RUN_ID}"
        self.network = f"{self.project}-users"
        self.prefix = f"devdock-ci{RUN_ID}"
        self.http_port, self.oidc_port = free_port(), free_port()
        self.hub_port, self.proxy_api_port = free_port(), free_port()
        self.gateway_port = free_port()
        # The shipped default: the hub on localhost, each user's server on its own origin (alice.localhost).
        self.url = f"http://localhost:{self.http_port}"
        self.issuer = f"http://127.0.0.1:{self.oidc_port}"
        self.service_token = secrets.token_hex(16)
        ssh_low = random.randrange(43000, 47900, 100)
        self.command = compose_command()
        # The runbook's layout: a site folder outside the checkout holds the stack's settings (devdock.env, whose
        # COMPOSE_FILE selects the override files once for every command), the profiles and site_config.py.
        self.site_dir = workdir / "site"
        self.site_dir.mkdir()
        env_file = self.site_dir / "devdock.env"  # never the developer's .env
        env_file.write_text(f"COMPOSE_FILE={COMPOSE_FILE}:{SITE_OVERRIDE}\n")
        (self.site_dir / "site_config.py").write_text(
            f"c = get_config()\nc.JupyterHub.template_vars = {{'announcement': {SITE_ANNOUNCEMENT!r}}}\n"
            # A GPU quota for a group the identity provider names (its groups claim becomes JupyterHub groups).
            f"c.DevDockSpawner.gpu_quotas = {SITE_QUOTAS!r}\n"
        )
        self.base_args = [*self.command, "-p", self.project, "--env-file", str(env_file)]
        self.env = {k: v for k, v in os.environ.items() if not _FOREIGN.match(k)}
        self.env.update(
            DEVDOCK_NETWORK=self.network,
            DEVDOCK_PREFIX=self.prefix,
            DEVDOCK_HUB_ID=self.project,  # hubs sharing an engine tell their containers apart by it
            DEVDOCK_EXTRA_LABELS=f"{RUN_LABEL}={RUN_ID}",
            DEVDOCK_PUBLIC_URL=self.url,
            DEVDOCK_HTTP_PORT=str(self.http_port),
            DEVDOCK_HUB_PORT=str(self.hub_port),
            DEVDOCK_PROXY_API_PORT=str(self.proxy_api_port),
            DEVDOCK_OIDC_ISSUER=self.issuer,
            DEVDOCK_OIDC_PORT=str(self.oidc_port),
            DEVDOCK_SSH_PORTS=f"{ssh_low}-{ssh_low + 99}",
            DEVDOCK_SSH_GATEWAY_PORT=str(self.gateway_port),
            DEVDOCK_SERVICE_TOKEN=self.service_token,
            DEVDOCK_SITE_DIR=str(self.site_dir),
            # The shipped DEVDOCK_HOME_SIZE (homes with a size limit), its images in this run's folder.
            DEVDOCK_HOME_IMAGES_DIR=str(workdir / "home-images"),
        )
        self.passwords: dict[str, str] = {}

    # --- compose -------------------------------------------------------------------------------------------------

    def compose(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*self.base_args, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"compose {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def up(self) -> None:
        # The README's command. Builds are layer-cache hits after scripts/build-images.sh; this checks the file's
        # build sections too.
        self.compose("up", "--build", "-d")
        self.wait_ready()
        self.passwords = self.credentials()

    def down(self) -> None:
        """``down`` without -v, as an administrator would; users' servers keep running."""
        self.compose("down", timeout=300)

    def wait_ready(self, timeout: float = 240) -> None:
        """Until the hub answers through the proxy and the identity provider answers browsers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                hub = requests.get(f"{self.url}/hub/api/", timeout=3)
                idp = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=3)
                if hub.status_code == 200 and idp.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the compose stack did not answer within {timeout}s:\n{self.logs()}")

    def credentials(self) -> dict[str, str]:
        """The demo users' generated passwords, as the README tells administrators to show them."""
        out = self.compose("exec", "-T", "oidc", "devdock-oidc", "credentials").stdout
        passwords = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 2 and "groups:" in line:
                passwords[fields[0]] = fields[1]
        assert {"admin", "alice", "bob", "visitor"} <= set(passwords), out
        return passwords

    def logs(self, tail: int = 200) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}", check=False).stdout

    def teardown(self, client) -> None:
        """Users' containers, the project with its volumes, then the users network the hub created."""
        for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
            if container.name.startswith(self.prefix + "-"):
                container.remove(force=True, v=True)
        self.compose("down", "-v", "--remove-orphans", check=False, timeout=300)
        for network in client.networks.list(names=[self.network]):
            if network.name == self.network:  # the filter matches prefixes too
                network.remove()

    # --- the hub's REST API (an admin service, DEVDOCK_SERVICE_TOKEN) --------------------------------------------

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token or self.service_token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kwargs)

    def user_url(self, user: str) -> str:
        """The user's server, on its own origin (``http://alice.localhost:<port>/user/alice/``)."""
        return f"http://{user}.localhost:{self.http_port}/user/{user}/"

    def route(self, user: str) -> dict:
        """The proxy's route to the user's server (its key names the user's own host)."""
        routes = self.api("GET", "/proxy").json()
        found = [route for spec, route in routes.items() if spec == f"{user}.localhost/user/{user}/"]
        assert len(found) == 1, routes
        return found[0]

    def token(self, user: str) -> str:
        assert self.api("POST", f"/users/{user}").status_code in (201, 409)
        r = self.api("POST", f"/users/{user}/tokens", json={"note": "devdock compose tests", "expires_in": 3600})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def spawn(self, user: str, options: dict, timeout: float = 180) -> dict:
        assert self.api("POST", f"/users/{user}").status_code in (201, 409)
        r = self.api("POST", f"/users/{user}/server", json=options)
        assert r.status_code in (201, 202), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.api("GET", f"/users/{user}").json()["servers"].get("", {})
            if server.get("ready"):
                return server
            time.sleep(0.5)
        raise AssertionError(f"{user}'s server not ready after {timeout}s:\n{self.logs()}")

    def stop(self, user: str, timeout: float = 60) -> None:
        """Stop the user's default server, if it runs."""
        r = self.api("DELETE", f"/users/{user}/server")
        assert r.status_code in (202, 204, 400, 404), r.text  # 400: not running
        deadline = time.monotonic() + timeout
        while self.api("GET", f"/users/{user}").json().get("servers"):
            assert time.monotonic() < deadline, f"{user}'s server did not stop within {timeout}s"
            time.sleep(0.5)

    def user_container(self, client, user: str):
        containers = client.containers.list(
            all=True, filters={"label": [f"{RUN_LABEL}={RUN_ID}", f"io.devdock.owner={user}"]}
        )
        containers = [c for c in containers if c.name.startswith(self.prefix + "-")]
        assert len(containers) <= 1, containers
        return containers[0] if containers else None

    def save_diagnostics(self, client, name: str) -> str:
        parts = [f"=== compose logs\n{self.logs()}"]
        for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
            if c.name.startswith(self.prefix + "-"):
                parts.append(f"=== docker logs {c.name}\n{c.logs(tail=80).decode(errors='replace')}")
        return save_failure_report(f"compose-{name}", parts)


class Person:
    """One browser profile (its own cookies), whose requests never leave this machine."""

    def __init__(self, browser, stack: Stack):
        self.stack = stack
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        #: Requests to anything but loopback: aborted (the network rule), and kept for assertions.
        self.off_site: list[str] = []
        #: Every URL the main frame navigated to.
        self.visited: list[str] = []
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()
        self.page.on("framenavigated", lambda frame: frame.parent_frame is None and self.visited.append(frame.url))

    def _guard(self, route):
        host = urlparse(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost") or host.endswith(".localhost"):
            route.continue_()
        else:
            self.off_site.append(route.request.url)
            route.abort()

    def sign_in_at_idp(self, user: str, password: str | None = None) -> None:
        """Fill the identity provider's login form this browser was sent to."""
        page = self.page
        page.wait_for_url(f"{self.stack.issuer}/interaction/**")
        page.fill("#username", user)
        page.fill("#password", self.stack.passwords[user] if password is None else password)
        page.click("#sign-in")

    def sign_in(self, user: str) -> None:
        """Open the hub, get sent to the IdP, sign in and come back to the hub."""
        self.page.goto(self.stack.url + "/hub/")
        self.sign_in_at_idp(user)
        # Back at the hub, or at the user's own server on its own origin when it runs (alice.localhost).
        self.page.wait_for_url(re.compile(rf"^http://([a-z0-9-]+\.)?localhost:{self.stack.http_port}/"))

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SHOTS / f"{name}.png")

    def close(self) -> None:
        self.context.close()


def ssh_banner(port: int, timeout: float = 10) -> bytes:
    """The first line sshd sends on a published port of this host."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return s.recv(64)

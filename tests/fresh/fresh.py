"""The fresh tier's parts: its own Docker engine, a clean clone of this checkout, and the README's commands run there.

The README promises that ``scripts/up.sh`` and ``docker compose up --build -d`` work on a fresh machine with the
shipped defaults. The other tiers cannot see whether they do: their hubs start from the harness's settings and every
image is built beforehand. Here the commands run exactly as written, from a ``git clone`` of this checkout's HEAD,
against a second Docker engine (tests/fresh/engine.sh) that holds only what these commands built into it: before each
command every image name on it is taken away but the base image's, so an image a default needs and the command does
not build is missing, as on a newcomer's machine. The images themselves are kept under a name nothing uses
(``PARKED``), so that their layers stay and the command's builds are cache hits (a warm machine rebuilds nothing),
and so does the base image ``scripts/base-image.sh`` made on the first run (made again, its new ID would miss every
cached layer).

Nothing of the commands' settings is overridden but ports (and the engine, through DOCKER_HOST): size-limited homes,
the SSH gateway, the idle culler and everything jupyterhub_config.py and docker-compose.yml set are the shipped ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import docker
import requests

from tests.harness import ARTIFACTS, ROOT, free_port

HERE = Path(__file__).resolve().parent
ENGINE_SH = HERE / "engine.sh"
SHOTS = ARTIFACTS / "screenshots" / "fresh"
LOGS = ARTIFACTS / "fresh"
#: Kept on the tier's engine between runs: the base image the first run made (debootstrap where no registry answers).
BASE_IMAGES = ("debian:bookworm-slim",)
#: Where the tier keeps the images of earlier runs: a name no default, no configuration and no command uses.
PARKED = "devdock-fresh-parked/"
#: The folder of size-limited homes' images: the shipped default (DEVDOCK_HOME_IMAGES_DIR), shared by both commands.
HOME_IMAGES = Path("/var/lib/devdock/homes")
#: The users the tier's journeys sign in as (their homes are the shipped defaults' names).
JOURNEY_USERS = ("alice", "admin")
#: A developer's or CI's variables that must not reach the commands under test (they would change the defaults).
_FOREIGN = re.compile(r"^(DEVDOCK_|OAUTH|CONFIGPROXY_|JUPYTERHUB_|COMPOSE_|DOCKER_)")
#: How long a command may take to answer: a cold machine builds every image first (measured: docs/performance.md).
UP_TIMEOUT = float(os.environ.get("DEVDOCK_FRESH_TIMEOUT", "3000"))


def timings(name: str, seconds: float) -> None:
    """Note a phase's time in artifacts/fresh/timings.txt (docs/performance.md reads them from there)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "timings.txt", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {name} {seconds:.1f}s\n")
    print(f"\n[fresh] {name}: {seconds:.1f}s")


class Engine:
    """The tier's own dockerd (tests/fresh/engine.sh), one tier run at a time on a machine."""

    def __init__(self):
        self.host = subprocess.run([ENGINE_SH, "host"], capture_output=True, text=True, check=True).stdout.strip()
        self._lock = None
        self.client: docker.DockerClient | None = None

    def start(self) -> None:
        # One fresh tier per machine: its engine, the gateway's name and alice's home are the machine's.
        self._lock = open("/run/devdock-fresh.lock", "w")  # noqa: SIM115 - held until stop()
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        subprocess.run([ENGINE_SH, "start"], check=True)
        self.client = docker.DockerClient(base_url=self.host, timeout=300)

    def stop(self) -> None:
        if self.client is not None:
            self.clear(images=False)
            self.client.close()
        subprocess.run([ENGINE_SH, "stop"], check=False)
        forget_metadata_rules()
        if self._lock is not None:
            self._lock.close()

    def env(self, **settings: str) -> dict[str, str]:
        """This process's environment without any devdock, compose or Docker setting, on the tier's engine."""
        env = {k: v for k, v in os.environ.items() if not _FOREIGN.match(k)}
        return {**env, "DOCKER_HOST": self.host, **settings}

    def clear(self, images: bool = True) -> None:
        """Containers, volumes (with their home images), networks and, with ``images``, every image tag but the
        base: what the next command finds is what it builds itself."""
        client = self.client
        for container in client.containers.list(all=True):
            container.remove(force=True, v=True)
        for volume in client.volumes.list():
            device = (volume.attrs.get("Options") or {}).get("device", "")
            volume.remove(force=True)
            if device.startswith(f"{HOME_IMAGES}/"):
                remove_home_image(Path(device).with_suffix(".img"))
        client.networks.prune()
        # The commands' defaults put homes in the host's HOME_IMAGES: a home there that no volume of this engine names
        # is a real devdock's on this host, which the journey's users would mount (and delete when they go).
        for user in JOURNEY_USERS:
            home = HOME_IMAGES / f"devdock-home-{user}.img"
            if home.exists():
                raise RuntimeError(
                    f"{home} is no home of the fresh tier's engine: a devdock on this host keeps it, and the tier's "
                    "hubs (the shipped home folder) would use it. Run the tier on a test machine, or remove the file "
                    "if an interrupted tier run left it."
                )
        if images:
            for image in client.images.list():
                for tag in image.tags:
                    if tag not in BASE_IMAGES and not tag.startswith(PARKED):
                        # Parked under a name nothing of devdock's uses, then the name the defaults use removed:
                        # the image's layers stay, so that the command's build of it is a cache hit (an image
                        # removed outright takes BuildKit's cached layers with it: a full rebuild every run).
                        image.tag(PARKED + tag.replace("/", "-").replace(":", "-"), "parked")
                        client.images.remove(tag)

    def tags(self) -> set[str]:
        """The image names on this engine that a command can use (not the parked ones)."""
        return {tag for image in self.client.images.list() for tag in image.tags if not tag.startswith(PARKED)}

    def user_container(self, user: str):
        found = self.client.containers.list(all=True, filters={"label": f"io.devdock.owner={user}"})
        assert len(found) <= 1, found
        return found[0] if found else None


def forget_metadata_rules() -> None:
    """The rules the hubs of the tier added to the host's DOCKER-USER chain for its users' networks (the shipped
    ``block_cloud_metadata``, on the main engine's chain): they name the tier's address pool, and go with the tier."""
    pool = ipaddress.ip_network(os.environ.get("DEVDOCK_FRESH_POOL", "10.213.0.0/16"))
    listed = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        rule = shlex.split(line)
        if rule[:2] != ["-A", "DOCKER-USER"] or "-s" not in rule or not any(a.startswith("devdock:") for a in rule):
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(rule[rule.index("-s") + 1]).subnet_of(pool):
                subprocess.run(["iptables", "-D", *rule[1:]], check=False)


def remove_home_image(image: Path) -> None:
    """A home image and its device link, its loop device detached (a run that stopped half-way may leave one)."""
    attached = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout
    for line in attached.splitlines():
        subprocess.run(["losetup", "-d", line.split(":", 1)[0]], check=False)
    for path in (image, image.with_suffix(".dev")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clone(dest: Path) -> str:
    """A clean clone of this checkout's HEAD (committed work only: what a newcomer's ``git clone`` gets)."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    head = head.stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", "--detach", head], check=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout  # fmt: skip
    if dirty.strip():
        print(f"\n[fresh] testing commit {head[:12]}: uncommitted changes of the checkout are not in the clone")
    return head


class UpSh:
    """``scripts/up.sh`` of a clean clone, in the foreground as the README runs it (its own session, so that the
    hub, its proxy and its culler stop together); only its ports are this run's."""

    def __init__(self, checkout: Path, engine: Engine):
        self.checkout, self.engine = checkout, engine
        self.port, self.gateway_port, self.proxy_api_port = free_port(), free_port(), free_port()
        self.env = engine.env(
            DEVDOCK_BIND_URL=f"http://127.0.0.1:{self.port}",
            DEVDOCK_SSH_GATEWAY_PORT=str(self.gateway_port),
            DEVDOCK_PROXY_API_URL=f"http://127.0.0.1:{self.proxy_api_port}",
        )
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / "up.log"
        self.proc: subprocess.Popen | None = None
        self.url = self.password = ""

    def start(self) -> None:
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["scripts/up.sh"],
                cwd=self.checkout,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = t0 + UP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scripts/up.sh exited with {self.proc.returncode}:\n{self.log_tail()}")
            text = self.log_path.read_text(errors="replace")
            started = re.search(r"devdock is starting on (\S+)", text)
            password = re.search(r"the password: (\S+)", text)
            if started and password:
                self.url, self.password = started.group(1).rstrip("/"), password.group(1)
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{self.url}/hub/api/", timeout=3).status_code == 200:
                        timings("scripts/up.sh until the hub answers", time.monotonic() - t0)
                        return
            time.sleep(1)
        raise RuntimeError(f"scripts/up.sh: no hub within {UP_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the hub as Ctrl-C would (it stops its proxy and culler), then anything of them still running."""
        if self.proc and self.proc.poll() is None:
            found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
            children = {int(pid): _cmdline(int(pid)) for pid in found.split()}
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            for pid, cmdline in children.items():
                if cmdline and _cmdline(pid) == cmdline:  # still that process, not a new one with its number
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)  # the hub's proxy or culler, left by a hub that was killed

    def log_tail(self, lines: int = 120) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Compose:
    """``docker compose up --build -d`` of a clean clone; only the project's ports (and the URLs that name them) are
    this run's, and the engine is the tier's (the CLI's DOCKER_HOST, the hub's DEVDOCK_DOCKER_SOCKET)."""

    def __init__(self, checkout: Path, engine: Engine):
        self.checkout, self.engine = checkout, engine
        self.http_port, self.oidc_port = free_port(), free_port()
        self.proxy_api_port, self.gateway_port = free_port(), free_port()
        self.url = f"http://localhost:{self.http_port}"
        self.issuer = f"http://127.0.0.1:{self.oidc_port}"
        self.env = engine.env(
            # The hub's engine is the tier's: the compose file mounts this socket into it (DOCKER_HOST is the CLI's).
            DEVDOCK_DOCKER_SOCKET=engine.host.removeprefix("unix://"),
            DEVDOCK_HTTP_PORT=str(self.http_port),
            DEVDOCK_PUBLIC_URL=self.url,
            DEVDOCK_OIDC_PORT=str(self.oidc_port),
            DEVDOCK_OIDC_ISSUER=self.issuer,
            DEVDOCK_PROXY_API_PORT=str(self.proxy_api_port),
            DEVDOCK_SSH_GATEWAY_PORT=str(self.gateway_port),
        )
        self.passwords: dict[str, str] = {}

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", "compose", *args], cwd=self.checkout, env=self.env, capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)} exited {result.returncode}:\n"
                               f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}")  # fmt: skip
        return result

    def base_image(self) -> None:
        """The README's step for a machine whose engine has no registry to pull the base image from: "No registry?
        Run scripts/base-image.sh first." (on a machine with one, the build pulls it; scripts/up.sh does this itself).
        Kept on the tier's engine afterwards (BASE_IMAGES), so only a machine's first run makes it."""
        if "debian:bookworm-slim" in self.engine.tags():
            return
        t0 = time.monotonic()
        result = subprocess.run(["scripts/base-image.sh"], cwd=self.checkout, env=self.env, capture_output=True,
                                text=True, timeout=UP_TIMEOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / "compose-base-image.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/base-image.sh exited {result.returncode}:\n{result.stderr[-8000:]}")
        timings("scripts/base-image.sh (no base image on this engine yet)", time.monotonic() - t0)

    def up(self) -> None:
        self.base_image()
        t0 = time.monotonic()
        result = self.run("up", "--build", "-d", check=False, timeout=UP_TIMEOUT)
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / "compose-up.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"docker compose up --build -d exited {result.returncode}:\n{result.stderr[-8000:]}")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                hub = requests.get(f"{self.url}/hub/api/", timeout=3)
                idp = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=3)
                if hub.status_code == idp.status_code == 200:
                    timings("docker compose up --build -d until the hub answers", time.monotonic() - t0)
                    break
            time.sleep(1)
        else:
            raise RuntimeError(f"the compose stack did not answer:\n{self.logs()}")
        out = self.run("exec", "-T", "oidc", "devdock-oidc", "credentials").stdout
        self.passwords = {f[0]: f[1] for f in (line.split() for line in out.splitlines() if "groups:" in line)}

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail=150", check=False).stdout

    def down(self) -> None:
        self.run("down", "-v", "--remove-orphans", check=False)


def loopback_only(context) -> list[str]:
    """Abort a browser context's requests to anything but this machine (the network rule); returns what it aborted.
    ``*.localhost`` is loopback: each user's server is on its own origin there (alice.localhost)."""
    aborted: list[str] = []

    def guard(route):
        host = urlparse(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost") or host.endswith(".localhost"):
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    return aborted


def until_lab(page, user: str, log_tail, timeout: float = 300) -> None:
    """Follow the hub as a person would (the home page's start button, the spawn form's, the progress page) until
    JupyterLab's launcher; an error page or a failed spawn fails at once, with the page's words and ``log_tail()``."""
    deadline = time.monotonic() + timeout
    clicked = set()
    while time.monotonic() < deadline:
        if f"/user/{user}/lab" in page.url and page.locator(".jp-LauncherCard").count():
            return
        if page.locator("div.error, #progress-message:has-text('Spawn failed')").count():
            shot(page, f"{user}-spawn-failed")
            raise AssertionError(
                f"{user}'s spawn failed: {page.inner_text('body')[:2000]}\n--- the hub's log ---\n{log_tail()}"
            )
        for name, button in (("home", page.locator("a#start")), ("form", page.locator("#spawn_form [type=submit]"))):
            if name not in clicked and button.count() and button.first.is_visible():
                clicked.add(name)
                button.first.click()
        time.sleep(1)
    shot(page, f"{user}-no-lab")
    raise AssertionError(f"no JupyterLab for {user} after {timeout}s at {page.url}:\n{log_tail()}")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png")


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

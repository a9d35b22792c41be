"""SSH through one port: devdock's OpenSSH gateway (images/ssh-gateway) in front of the real hub and real servers,
driven by the real OpenSSH client with the ``~/.ssh/config`` block and ``known_hosts`` lines that ``/hub/ssh``
shows, strict host-key checking on."""

from __future__ import annotations

import base64
import html
import itertools
import re
import secrets
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import requests

from tests.harness import Gateway, free_port, keygen, run_in_terminal, ssh_client_config

#: Characters str.splitlines() breaks a line at and split("\n") does not (issue 30).
LINE_BREAKERS = ["\u2028", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2029"]
#: Hub users named with them, as an identity provider may name its users: logging in as ``gw-oddN`` with the test
#: hub's form makes one the user ``gw-oddN<char>x`` (JupyterHub's username_map; the form itself would turn control
#: characters into spaces).
ODD_NAMES = {f"gw-odd{i}": f"gw-odd{i}{char}x" for i, char in enumerate(LINE_BREAKERS)}


@pytest.fixture(scope="module")
def gw(docker_client, tmp_path_factory, make_hub):
    keys = tmp_path_factory.mktemp("gateway-keys")
    token, port = secrets.token_hex(16), free_port()
    hub = make_hub(
        "gwhub", extra_config=f"c.Authenticator.username_map = {ODD_NAMES!r}",
        DEVDOCK_SSH_MODE="gateway", DEVDOCK_SSH_GATEWAY_TOKEN=token, DEVDOCK_SSH_GATEWAY_PORT=str(port),
        DEVDOCK_SSH_GATEWAY_HOST="127.0.0.1", DEVDOCK_SSH_GATEWAY_HOST_KEY=str(keys / "ssh_host_ed25519_key.pub"),
    )  # fmt: skip
    gateway = Gateway(docker_client, hub.url, token, port, keys)
    try:
        gateway.start()
        hub.gateway = gateway
        yield hub
    finally:
        gateway.remove()


def _pre(page: str, element_id: str) -> str:
    found = re.search(rf'<pre id="{element_id}">(.*?)</pre>', page, re.S)
    assert found, f"no {element_id} on the page"
    return html.unescape(found.group(1))


def client_config(hub, user: str, key: str, folder) -> tuple[str, str]:
    """An ssh_config made of what /hub/ssh shows the user (and their key); returns (config path, page)."""
    page = hub.browser_session(user).get(f"{hub.url}/hub/ssh", timeout=30).text
    config, env = ssh_client_config(
        folder, user, _pre(page, "ssh-gateway-config"), _pre(page, "ssh-gateway-known-hosts"), key
    )
    _ENV[:] = [env]
    return config, page


#: The environment of the last client_config (its ssh first on PATH), for run().
_ENV: list[dict] = []


def run(*args: str, timeout: float = 60, plain: bool = False) -> subprocess.CompletedProcess:
    """``plain``: the system's ssh alone; otherwise with the last client_config's environment."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=None if plain or not _ENV else _ENV[0])  # fmt: skip


def gateway_ssh(hub, key: str, target: str, *options: str) -> subprocess.CompletedProcess:
    """Straight to the gateway as the ``devdock`` account (no ssh_config), asking for ``target``."""
    return run(
        "ssh", "-p", str(hub.gateway.port), "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        *options, "devdock@127.0.0.1", target, timeout=30, plain=True,
    )  # fmt: skip


def test_gateway_reaches_default_and_named_servers_with_the_pages_config_scp_sftp_rsync_and_port_forwarding(
    gw, tmp_path
):
    hub = gw
    key, line = keygen(tmp_path, "gw-alice")
    hub.save_ssh_keys("gw-alice", line)
    hub.spawn("gw-alice")
    hub.spawn("gw-alice", "proj")
    config, page = client_config(hub, "gw-alice", key, tmp_path)
    assert "ProxyCommand ssh -T devdock-gateway gw-alice/proj" in _pre(page, "ssh-gateway-config")
    login = hub.container("gw-alice").exec_run(["id", "-un", "1000"]).output.decode().strip()

    # No host port per server: the gateway is the only way in.
    assert not (hub.container("gw-alice").attrs["HostConfig"]["PortBindings"] or {}).get("22/tcp")

    default = run("ssh", "-F", config, "devdock", "whoami; hostname")
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == [login, hub.container("gw-alice").attrs["Config"]["Hostname"]]
    named = run("ssh", "-F", config, "devdock-proj", "hostname")
    assert named.stdout.strip() == hub.container("gw-alice", "proj").attrs["Config"]["Hostname"], named.stderr

    # scp both ways, sftp.
    (tmp_path / "up.txt").write_text("from the laptop\n")
    assert run("scp", "-F", config, str(tmp_path / "up.txt"), "devdock:up.txt").returncode == 0
    assert run("ssh", "-F", config, "devdock", "cat up.txt").stdout == "from the laptop\n"
    assert run("scp", "-F", config, "devdock:up.txt", str(tmp_path / "down.txt")).returncode == 0
    assert (tmp_path / "down.txt").read_text() == "from the laptop\n"
    batch = tmp_path / "sftp-batch"
    batch.write_text(f"put {tmp_path / 'up.txt'} via-sftp.txt\nls\n")
    sftp = run("sftp", "-F", config, "-b", str(batch), "devdock-proj", timeout=60)
    assert sftp.returncode == 0 and "via-sftp.txt" in sftp.stdout, sftp.stderr
    assert "via-sftp.txt" in run("ssh", "-F", config, "devdock-proj", "ls").stdout

    # rsync (over ssh, as users run it): a folder up, changed, and up again.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1,2,3\n")
    synced = run("rsync", "-a", "-e", f"ssh -F {config}", f"{tmp_path / 'data'}/", "devdock:data/", timeout=120)
    assert synced.returncode == 0, synced.stderr
    (tmp_path / "data" / "b.csv").write_text("4,5,6\n")
    assert run("rsync", "-a", "-e", f"ssh -F {config}", f"{tmp_path / 'data'}/", "devdock:data/").returncode == 0
    assert run("ssh", "-F", config, "devdock", "cat data/a.csv data/b.csv").stdout == "1,2,3\n4,5,6\n"

    # ssh -L to a port inside the container, through the gateway.
    local = free_port()
    server = subprocess.Popen(
        ["ssh", "-F", config, "-L", f"{local}:127.0.0.1:8765", "devdock",
         "cd /tmp && echo forwarded > index.html && exec python3 -m http.server 8765 --bind 127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_ENV[0],
    )  # fmt: skip
    try:
        body, deadline = "", time.monotonic() + 30
        while time.monotonic() < deadline and "forwarded" not in body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=3).read().decode()
            except OSError:
                time.sleep(0.5)
        assert body.strip() == "forwarded"
    finally:
        server.terminate()
        server.wait(10)

    # The page's known_hosts lines are what strict checking needs: another key for the gateway fails.
    other = tmp_path / "known_hosts-gw-alice"
    good = other.read_text()
    _, stranger = keygen(tmp_path, "stranger")
    other.write_text(re.sub(r"^(\S+) \S+ \S+", lambda m: f"{m.group(1)} {stranger.split()[0]} {stranger.split()[1]}",
                            good, count=1))  # fmt: skip
    refused = run("ssh", "-F", config, "devdock", "whoami")
    assert refused.returncode == 255 and "host key" in refused.stderr.lower(), refused.stderr
    other.write_text(good)
    assert run("ssh", "-F", config, "devdock", "true").returncode == 0  # positive control
    assert "gw-alice -> gw-alice's default server" in hub.gateway.logs()  # the gateway logs who went where
    assert "ssh gateway: key SHA256:" in hub.log_tail(400)


def test_gateway_keeps_each_key_to_its_owners_servers_and_a_removed_key_is_refused_at_once(gw, tmp_path):
    hub = gw
    akey, aline = keygen(tmp_path, "gw-amy")
    bkey, bline = keygen(tmp_path, "gw-ben")
    nobody, _ = keygen(tmp_path, "nobody")
    hub.save_ssh_keys("gw-amy", aline)
    hub.save_ssh_keys("gw-ben", bline)
    hub.spawn("gw-amy")
    hub.spawn("gw-ben")
    ben_ip = hub.container("gw-ben").attrs["NetworkSettings"]["Networks"][hub.network]["IPAddress"]
    # Positive control: amy's key through the raw gateway command reaches amy's sshd.
    assert gateway_ssh(hub, akey, "gw-amy").stdout.startswith("SSH-2.0-OpenSSH")

    for target in ("gw-ben", "ben/", "amy/../ben", "ben%2Fx", "amy ben", "%62en"):
        attempt = gateway_ssh(hub, akey, target)
        assert "SSH-2.0" not in attempt.stdout, (target, attempt.stdout)
        assert "devdock gateway:" in attempt.stderr, (target, attempt.stderr)
    # No forwarding of any kind on the gateway itself: not to ben's sshd, not to the hub.
    jump = run("ssh", "-p", str(hub.gateway.port), "-i", akey, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-W", f"{ben_ip}:22", "devdock@127.0.0.1", timeout=30, plain=True)  # fmt: skip
    assert "SSH-2.0" not in jump.stdout and jump.returncode != 0
    # A key that is on nobody's /hub/ssh page gets nothing, not even a command.
    assert "Permission denied" in gateway_ssh(hub, nobody, "gw-amy").stderr

    # amy removes her key: the very next connection is refused, no restart of anything.
    hub.save_ssh_keys("gw-amy", "")
    assert "Permission denied" in gateway_ssh(hub, akey, "gw-amy").stderr
    assert gateway_ssh(hub, bkey, "gw-ben").stdout.startswith("SSH-2.0-OpenSSH")  # ben is not affected


def test_gateway_says_when_a_server_is_not_running_and_works_after_gateway_and_hub_restarts(gw, tmp_path):
    hub = gw
    key, line = keygen(tmp_path, "gw-cleo")
    hub.save_ssh_keys("gw-cleo", line)
    hub.spawn("gw-cleo")
    config, _ = client_config(hub, "gw-cleo", key, tmp_path)
    assert run("ssh", "-F", config, "devdock", "true").returncode == 0
    hub.stop_server("gw-cleo")
    stopped = gateway_ssh(hub, key, "gw-cleo")
    assert "is not running" in stopped.stderr, stopped.stderr
    hub.spawn("gw-cleo")

    hub.gateway.restart()  # the same host key afterwards: strict checking still passes
    after = run("ssh", "-F", config, "devdock", "true")
    assert after.returncode == 0, after.stderr
    hub.stop()
    hub.start()
    after = run("ssh", "-F", config, "devdock", "whoami")
    assert after.returncode == 0, after.stderr
    hub.stop_server("gw-cleo")


def test_gateway_autostart_connecting_starts_a_stopped_server_and_lands_in_it(docker_client, tmp_path_factory,
                                                                              tmp_path, make_hub):  # fmt: skip
    token, port = secrets.token_hex(16), free_port()
    hub = make_hub("autostart", start=False, DEVDOCK_SSH_MODE="gateway",
        DEVDOCK_SSH_GATEWAY_TOKEN=token, DEVDOCK_SSH_GATEWAY_PORT=str(port), DEVDOCK_SSH_GATEWAY_AUTOSTART="1",
    )  # fmt: skip
    hub.start()
    gateway = Gateway(docker_client, hub.url, token, port, tmp_path_factory.mktemp("autostart-keys"))
    try:
        gateway.start()
        hub.gateway = gateway
        key, line = keygen(tmp_path, "gw-dora")
        hub.save_ssh_keys("gw-dora", line)
        assert hub.container("gw-dora") is None  # never started
        relay = (
            f"ssh -p {port} -i {key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null devdock@127.0.0.1 gw-dora"
        )
        landed = run("ssh", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o",
                     "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", f"ProxyCommand={relay}",
                     "gw-dora@devdock", "whoami", timeout=240, plain=True)  # fmt: skip
        assert landed.returncode == 0, landed.stderr
        assert "starting gw-dora's default server" in landed.stderr
        assert landed.stdout.strip() == hub.container("gw-dora").exec_run(["id", "-un", "1000"]).output.decode().strip()
        assert hub.user_model("gw-dora")["servers"][""]["ready"]
        hub.stop_server("gw-dora")
    finally:
        gateway.remove()
        hub.stop()


def random_public_key() -> str:
    """A public key nobody has ever kept (and whose private half nobody knows)."""
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", secrets.token_bytes(32)))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


def offer_random_keys(port: int, folder, source: str, n: int) -> subprocess.CompletedProcess:
    """One connection from ``source`` (a loopback address) that offers three new random public keys. The client has
    no private key: it can only offer them, as a flood would."""
    files = []
    for k in range(3):
        path = folder / f"random-{source}-{n}-{k}.pub"
        path.write_text(random_public_key() + "\n")
        files += ["-i", str(path)]
    return run(
        "ssh", "-b", source, "-p", str(port), *files, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
        "devdock@127.0.0.1", "gw-flo", timeout=60, plain=True,
    )  # fmt: skip


class RandomKeyFlood:
    """Connections offering random keys from one loopback address, ``clients`` at a time, until stopped or until
    ``limit`` connections or ``seconds`` (bounded, loopback only)."""

    def __init__(self, port: int, folder, source: str, clients: int = 8, limit: int = 600, seconds: float = 150):
        self.port, self.folder, self.source = port, folder, source
        self.clients, self.limit, self.deadline = clients, limit, time.monotonic() + seconds
        self.results: list[subprocess.CompletedProcess] = []
        self.stop = threading.Event()
        self._count = itertools.count()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self):
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            n = next(self._count)
            if n >= self.limit:
                return
            self.results.append(offer_random_keys(self.port, self.folder, self.source, n))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(90)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)


def test_a_flood_of_random_keys_stalls_neither_the_hub_nor_a_users_login_through_the_gateway(gw, tmp_path):
    hub = gw
    key, line = keygen(tmp_path, "gw-flo")
    hub.save_ssh_keys("gw-flo", line)
    hub.spawn("gw-flo")
    config, _ = client_config(hub, "gw-flo", key, tmp_path)
    login = hub.container("gw-flo").exec_run(["id", "-un", "1000"]).output.decode().strip()
    with RandomKeyFlood(hub.gateway.port, tmp_path, "127.0.0.2") as flood:
        while len(flood.results) < 20 and flood.running:  # the flood is under way
            time.sleep(0.2)
        for _ in range(3):  # the user logs in with the page's config, three times, during the flood
            before = len(flood.results)
            inside = run("ssh", "-F", config, "devdock", "whoami", timeout=90)
            assert inside.returncode == 0, inside.stderr
            assert inside.stdout.strip() == login
            assert flood.running and len(flood.results) > before, "the flood was not going on during the login"
            assert requests.get(f"{hub.url}/hub/health", timeout=30).status_code == 200
    offers = flood.results
    assert len(offers) >= 40, len(offers)
    assert all(o.returncode == 255 and "SSH-2.0" not in o.stdout for o in offers), [o.stderr for o in offers[:5]]
    # Offered, looked up and refused (not just dropped at the door): MaxAuthTries ends the connection at the third.
    refused = [o for o in offers if "Too many authentication failures" in o.stderr or "Permission denied" in o.stderr]
    assert len(refused) >= 20, [o.stderr for o in offers[:5]]
    # Random keys leave nothing behind on the gateway: its cache keeps only keys somebody keeps, briefly.
    cache = hub.gateway.container.exec_run(["sh", "-c", "ls /run/devdock-gateway/cache 2>/dev/null | wc -l"])
    assert int(cache.output.decode().strip() or 0) <= 6, cache.output
    tmpfs = hub.gateway.container.exec_run(["df", "-k", "/run/devdock-gateway"]).output.decode().splitlines()[-1]
    assert int(tmpfs.split()[1]) <= 16 * 1024, tmpfs  # and the folder is a tmpfs of bounded size
    assert "SSH key index of" in hub.log_tail(2000)  # the hub answered from its index


def test_the_gateway_limits_key_lookups_per_client_address_and_other_addresses_still_get_in(gw, tmp_path):
    hub = gw
    key, line = keygen(tmp_path, "gw-lim")
    hub.save_ssh_keys("gw-lim", line)
    # A second gateway in front of the same hub, with a small limit: 4 lookups at once, then one every 20 s (slow
    # enough that no attempt on a loaded machine, which may take seconds, lets the bucket fill again in between).
    port = free_port()
    strict = Gateway(
        hub.client,
        hub.url,
        hub.env["DEVDOCK_SSH_GATEWAY_TOKEN"],
        port,
        tmp_path / "strict-keys",
        environment={"DEVDOCK_SSH_GATEWAY_LOOKUP_RATE": "0.05", "DEVDOCK_SSH_GATEWAY_LOOKUP_BURST": "4"},
    )
    (tmp_path / "strict-keys").mkdir()
    strict.start()
    try:

        def attempt(source: str) -> subprocess.CompletedProcess:
            return run(
                "ssh", "-b", source, "-p", str(port), "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "devdock@127.0.0.1", "gw-lim",
                timeout=30, plain=True,
            )  # fmt: skip

        outcomes = []
        for _ in range(20):
            answer = attempt("127.0.0.3")
            outcomes.append("refused" if "Permission denied" in answer.stderr else answer.stderr)
            if outcomes[-1] == "refused":
                break
        assert "is not running" in outcomes[0], outcomes  # the key was accepted (its owner's server is stopped) ...
        assert outcomes[-1] == "refused", outcomes  # ... until this address asked too often
        assert "too many key lookups from 127.0.0.3" in strict.logs()
        assert "is not running" in attempt("127.0.0.1").stderr  # another address still gets in (positive control)
    finally:
        strict.remove()


def test_a_deleted_users_key_is_refused_by_the_gateway_at_once(gw, tmp_path):
    hub = gw
    key, line = keygen(tmp_path, "gw-gone")
    hub.save_ssh_keys("gw-gone", line)
    assert "is not running" in gateway_ssh(hub, key, "gw-gone").stderr  # accepted while the user exists
    assert hub.api("DELETE", "/users/gw-gone").status_code == 204
    assert "Permission denied" in gateway_ssh(hub, key, "gw-gone").stderr


def test_users_named_with_line_breaks_save_keys_and_break_no_other_users_gateway_login(gw, tmp_path):
    hub = gw
    key, line = keygen(tmp_path, "gw-gus")
    hub.save_ssh_keys("gw-gus", line)
    assert "is not running" in gateway_ssh(hub, key, "gw-gus").stderr  # before: gus gets in
    odd_keys = {}
    for login, name in ODD_NAMES.items():
        odd_key, odd_line = keygen(tmp_path, login)
        saved = hub.save_ssh_keys(login, odd_line)  # as the user ``name`` (see ODD_NAMES)
        assert odd_line.split()[1] in html.unescape(saved.text)  # the page shows the key it saved
        assert hub.user_model(urllib.parse.quote(name, safe=""))["name"] == name
        odd_keys[name] = odd_key
    assert "is not running" in gateway_ssh(hub, key, "gw-gus").stderr  # after: gus still gets in
    for name, odd_key in odd_keys.items():  # and each odd name reaches its own (stopped) server, nobody else's
        own = gateway_ssh(hub, odd_key, urllib.parse.quote(name, safe=""))
        assert "is not running" in own.stderr, (name, own.stderr)
        assert "does not belong" in gateway_ssh(hub, odd_key, "gw-gus").stderr


def test_a_user_called_alice_at_example_org_uses_the_pages_ssh_config_through_the_gateway(gw, tmp_path):
    hub = gw
    name = "alice@example.org"
    key, line = keygen(tmp_path, "alice-example")
    hub.save_ssh_keys(name, line)
    hub.spawn(name)
    config, page = client_config(hub, name, key, tmp_path)
    assert "ProxyCommand ssh -T devdock-gateway alice%%40example.org" in _pre(page, "ssh-gateway-config")
    inside = run("ssh", "-F", config, "devdock", "whoami; hostname")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.split() == [
        hub.container(name).exec_run(["id", "-un", "1000"]).output.decode().strip(),
        hub.container(name).attrs["Config"]["Hostname"],
    ]
    hub.stop_server(name)


def _through_socks(socks_port: int, port: int, path: str = "/") -> str:
    """An HTTP GET of 127.0.0.1:``port`` (inside the server) through the SOCKS5 proxy that ``ssh -D`` opened on this
    machine, as VS Code reaches its remote server (RFC 1928, no authentication)."""
    import socket

    with socket.create_connection(("127.0.0.1", socks_port), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", port))
        reply = s.recv(10)
        assert reply[:2] == b"\x05\x00", reply  # granted by the server's sshd
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


#: What VS Code's Remote-SSH sends on stdin of ``ssh -T -D PORT host bash`` (in spirit): look at the platform,
#: unpack the server it copied up (remote.SSH.localServerDownload: the client downloads it, the server needs no
#: internet), start it on a loopback port, say where it listens, and keep the connection open for the tunnel.
REMOTE_SSH_SCRIPT = """\
set -e
echo "platform=$(uname -s)-$(uname -m) python=$(command -v python3)"
dir="$HOME/.vscode-server/cli/servers/Stable-{commit}"
mkdir -p "$dir"
tar -xzf "$HOME/.vscode-server/vscode-server-{commit}.tar.gz" -C "$dir"
cd "$dir/server"
nohup python3 -u -m http.server 0 --bind 127.0.0.1 > "$dir/log" 2>&1 &
echo $! > "$dir/pid"
for i in $(seq 100); do grep -q "port" "$dir/log" && break; sleep 0.1; done
echo "listeningOn=$(sed -n 's/.*port \\([0-9]*\\).*/\\1/p' "$dir/log" | head -n 1)"
echo "exitCode==0=="
sleep 120
"""


def test_gateway_vscode_remote_ssh_steps_dynamic_forward_script_server_copied_up_and_reached_through_the_tunnel(
    gw, tmp_path
):
    """The steps VS Code's Remote-SSH takes, with the real OpenSSH client through the gateway and the ssh_config block
    /hub/ssh shows (docs/ssh.md, "VS Code Remote-SSH"): the server's tarball copied up with scp (the remote has no
    internet), ``ssh -T -D`` running a script in bash, a server started and reached through the SOCKS tunnel."""
    import io
    import tarfile

    hub = gw
    key, line = keygen(tmp_path, "gw-vera")
    hub.save_ssh_keys("gw-vera", line)
    hub.spawn("gw-vera")
    config, _ = client_config(hub, "gw-vera", key, tmp_path)
    commit = secrets.token_hex(20)
    # The "server" tarball, downloaded by the client (here: made), with a page that says whose it is.
    tarball = tmp_path / f"vscode-server-{commit}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        page = f"vscode server {commit}\n".encode()
        info = tarfile.TarInfo("server/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    assert run("ssh", "-F", config, "devdock", "mkdir -p .vscode-server").returncode == 0
    copied = run("scp", "-F", config, str(tarball), f"devdock:.vscode-server/{tarball.name}")
    assert copied.returncode == 0, copied.stderr
    socks = free_port()
    session = subprocess.Popen(
        ["ssh", "-F", config, "-T", "-D", f"127.0.0.1:{socks}", "-o", "ExitOnForwardFailure=yes", "devdock", "bash"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV[0],
    )  # fmt: skip
    try:
        session.stdin.write(REMOTE_SSH_SCRIPT.format(commit=commit))
        session.stdin.close()
        said, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and not any(s.startswith("exitCode==0==") for s in said):
            said.append(session.stdout.readline().strip())
            assert session.poll() is None, (said, session.stderr.read())
        facts = dict(s.split("=", 1) for s in said if s.startswith("listeningOn="))
        assert said[0].startswith("platform=Linux-") and "python=/" in said[0], said
        port = int(facts["listeningOn"])
        # The server answers on the container's loopback only, reached through the SSH tunnel's SOCKS proxy.
        answer = _through_socks(socks, port, "/index.html")
        assert answer.startswith("HTTP/1.0 200") and f"vscode server {commit}" in answer, answer[:300]
        # The same interpreter as in JupyterLab's terminal (one environment everywhere).
        python = said[0].rpartition("python=")[2]
        lab = run_in_terminal(hub.server_url("gw-vera"), hub.token("gw-vera"), "echo py=$(command -v python3)=",
                              f"py={python}=")  # fmt: skip
        assert f"py={python}=" in lab, (said[0], lab)
    finally:
        session.terminate()
        session.wait(10)
    run("ssh", "-F", config, "devdock", f"kill $(cat .vscode-server/cli/servers/Stable-{commit}/pid)")

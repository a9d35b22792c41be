"""SSH into your own container, with the real OpenSSH client against the real sshd in the image."""

from __future__ import annotations

import concurrent.futures
import json
import re
import sqlite3
import subprocess
import time
from datetime import datetime

import pytest
import requests

from tests.harness import free_port, keygen, ssh, xsrf_from


def host_key(port: int) -> str:
    out = subprocess.run(
        ["ssh-keyscan", "-p", str(port), "-t", "ed25519", "127.0.0.1"], capture_output=True, text=True, timeout=30
    ).stdout
    return out.split()[-1] if out.strip() else ""


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {name: keygen(d, name) for name in ("sam", "bob", "sam2")}


@pytest.fixture(scope="module")
def sam(hub, keys):
    """sam's server, started with the public key he saved on /hub/ssh."""
    hub.save_ssh_keys("sam", keys["sam"][1])
    hub.spawn("sam")
    port = hub.server_state("sam")["ssh_port"]
    return {"port": port, "key": keys["sam"][0]}


def test_users_key_logs_in_as_the_user(sam):
    result = ssh(sam["port"], "sam", sam["key"], "whoami; id -u; test -w $HOME && echo home-writable")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["sam", "1000", "home-writable"]


def test_password_login_is_refused(sam):
    result = ssh(
        sam["port"], "sam", None, "whoami",
        "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
    )  # fmt: skip
    assert result.returncode == 255
    # the server offers public keys and nothing else
    assert "Permission denied (publickey)" in result.stderr, result.stderr


def test_root_login_is_refused(sam):
    result = ssh(sam["port"], "root", sam["key"])
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_another_users_key_is_refused(sam, keys):
    result = ssh(sam["port"], "sam", keys["bob"][0])
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_authorized_keys_cannot_be_changed_by_the_user(hub, sam):
    result = ssh(sam["port"], "sam", sam["key"], "echo x >> /etc/devdock/ssh/authorized_keys; echo rc=$?")
    assert "rc=1" in result.stdout
    listing = hub.container("sam").exec_run(["stat", "-c", "%U %a", "/etc/devdock/ssh/authorized_keys"]).output
    assert listing.decode().split() == ["root", "644"]


def test_port_and_host_key_survive_stop_start_and_hub_restart(hub, sam):
    port, before = sam["port"], host_key(sam["port"])
    assert before
    hub.stop_server("sam")
    assert hub.server_state("sam")["ssh_port"] == port  # kept while stopped
    hub.spawn("sam")
    assert hub.server_state("sam")["ssh_port"] == port
    assert host_key(port) == before  # no "host key changed" warning for users

    hub.restart()
    hub.wait_ready("sam")
    assert ssh(port, "sam", sam["key"]).stdout.strip() == "sam"
    hub.stop_server("sam")
    hub.spawn("sam")
    assert hub.server_state("sam")["ssh_port"] == port
    assert ssh(port, "sam", sam["key"]).stdout.strip() == "sam"


def test_concurrent_spawns_get_different_ports(hub, keys):
    users = ["conc1", "conc2", "conc3"]
    for user in users:
        hub.save_ssh_keys(user, keys["bob"][1])
    with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(hub.spawn, users))
    ports = [hub.server_state(u)["ssh_port"] for u in users]
    assert len(set(ports)) == len(users), ports
    for user, port in zip(users, ports, strict=True):
        assert ssh(port, user, keys["bob"][0]).stdout.strip() == user
    for user in users:
        hub.stop_server(user)


def _save_keys(session, hub, text: str):
    page = session.get(f"{hub.url}/hub/ssh", timeout=30)
    return session.post(f"{hub.url}/hub/ssh", data={"keys": text, "_xsrf": xsrf_from(page.text)}, timeout=30)


def _stored_keys(session, hub) -> str:
    page = session.get(f"{hub.url}/hub/ssh", timeout=30).text
    return re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.S).group(1).strip()


def test_ssh_page_needs_a_login(hub):
    r = requests.get(f"{hub.url}/hub/ssh", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/login" in r.headers["Location"]


def test_ssh_page_shows_the_command_and_saves_keys_at_once(hub, sam, keys):
    session = hub.browser_session("sam")
    page = session.get(f"{hub.url}/hub/ssh", timeout=30)
    assert page.status_code == 200
    assert f"ssh -p {sam['port']} sam@127.0.0.1" in page.text

    # A new key replaces the old one in the running container, without a restart.
    r = _save_keys(session, hub, keys["sam2"][1])
    assert r.status_code == 200, r.text
    assert 'id="ssh-saved"' in r.text
    assert ssh(sam["port"], "sam", keys["sam2"][0]).stdout.strip() == "sam"
    assert ssh(sam["port"], "sam", sam["key"]).returncode == 255


JUNK = [
    ("options-command", 'command="/bin/sh" {key}', "options"),
    ("options-from", 'from="10.0.0.1" {key}', "options"),
    ("dsa", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "DSA"),
    ("garbage", "not a key at all", "unknown key type"),
    ("damaged", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBad", "damaged"),
]


@pytest.mark.parametrize(("line", "message"), [j[1:] for j in JUNK], ids=[j[0] for j in JUNK])
def test_junk_keys_are_refused_and_nothing_is_lost(hub, keys, line, message):
    session = hub.browser_session("sam")
    stored = _stored_keys(session, hub)
    assert stored.startswith("ssh-ed25519 ")
    r = _save_keys(session, hub, line.format(key=keys["sam"][1]))
    assert r.status_code == 400
    assert message in r.text
    assert _stored_keys(session, hub) == stored


def test_weak_rsa_key_is_refused_on_the_ssh_page(hub, tmp_path):
    _, weak = keygen(tmp_path, "weak", "rsa", 1024)
    session = hub.browser_session("weakling")
    r = _save_keys(session, hub, weak)
    assert r.status_code == 400
    assert "at least 2048 bits" in r.text
    assert _stored_keys(session, hub) == ""


def _last_activity(hub, name: str) -> datetime:
    value = hub.user_model(name)["servers"][""]["last_activity"]
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_an_ssh_session_counts_as_activity(hub, keys):
    hub.save_ssh_keys("idle", keys["bob"][1])
    hub.spawn("idle")
    port = hub.server_state("idle")["ssh_port"]
    interval = float(hub.env["DEVDOCK_ACTIVITY_INTERVAL"])
    # Control: with nobody using the server, its activity stands still across three report intervals (after the
    # report a server makes as it starts, which may land just after the spawn returns).
    time.sleep(1.5 * interval)
    quiet = _last_activity(hub, "idle")
    deadline = time.monotonic() + 3 * interval
    while time.monotonic() < deadline:
        assert _last_activity(hub, "idle") == quiet
        time.sleep(0.5)
    # An SSH session, and nothing else, moves it forward.
    session = subprocess.Popen(
        ["ssh", "-p", str(port), "-i", keys["bob"][0], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "idle@127.0.0.1",
         f"echo session-open; sleep {int(6 * interval)}; echo session-done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert session.stdout.readline().strip() == "session-open", session.stderr.read()
        deadline = time.monotonic() + 5 * interval
        while time.monotonic() < deadline and _last_activity(hub, "idle") <= quiet:
            time.sleep(0.5)
        assert _last_activity(hub, "idle") > quiet
        out, err = session.communicate(timeout=10 * interval)
        assert session.returncode == 0 and out.strip() == "session-done", (session.returncode, out, err)
    finally:
        session.kill()
        hub.stop_server("idle")


def test_admins_see_every_users_port_and_others_do_not(hub, sam):
    page = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/admin", timeout=30)
    assert page.status_code == 200
    row = re.search(r'<tr data-user="sam" data-server="\(default\)">(.*?)</tr>', page.text, re.S)
    assert row, page.text[-2000:]
    assert f'<td class="ssh-port">{sam["port"]}</td>' in row.group(1)
    # The admin panel's REST model carries it too (state is visible to admins).
    assert hub.server_state("sam")["ssh_port"] == sam["port"]
    refused = hub.browser_session("bob").get(f"{hub.url}/hub/devdock/admin", timeout=30)
    assert refused.status_code == 403


def _two_free_ports() -> tuple[int, int]:
    """Two neighbouring ports nothing listens on now, on the loopback address."""
    import socket

    for _ in range(100):
        low = free_port()
        if low >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", low))
                b.bind(("127.0.0.1", low + 1))
        except OSError:
            continue
        return low, low + 1
    raise RuntimeError("no two neighbouring free ports")


def test_docker_bind_error_moves_on_to_the_next_port(make_hub, keys):
    """A port that looks free to devdock but that Docker cannot bind (a host program took it)."""
    import socket

    from devdock_spawner.naming import server_key
    from devdock_spawner.ports import PortAllocator

    low, high = _two_free_ports()  # not fixed numbers: another hub or container of the suite may hold those
    home = PortAllocator(low, high).home_port(server_key("binder"))
    extra = f"c.DevDockSpawner.ssh_port_range = ({low}, {high})\nc.DevDockSpawner.ssh_probe_host_ports = False\n"
    hub = make_hub("bind", start=False, extra_config=extra)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", home))
        squatter.listen()
        hub.start()
        try:
            hub.save_ssh_keys("binder", keys["bob"][1])
            hub.spawn("binder")
            port = hub.server_state("binder")["ssh_port"]
            assert port == (high if home == low else low)
            assert "is taken outside devdock" in hub.log_tail(200)
            assert ssh(port, "binder", keys["bob"][0]).stdout.strip() == "binder"
            hub.stop_server("binder")
        finally:
            hub.stop()


def _banner(port: int) -> bytes:
    """What the published port says first: b"" if it closes at once or refuses."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(5)
            return s.recv(64)
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError):
        return b""


TAKEOVER = r"""
listener=$(pgrep -u "$USER" -f '^/usr/bin/python3 -I /opt/devdock/bin/devdock-ssh-listener serve')
echo "listener=$listener"
cat /proc/$listener/environ >/dev/null 2>&1 && echo listener-readable || echo listener-private
cat /proc/$PPID/environ >/dev/null 2>&1 && echo sshd-readable || echo sshd-private
cat /proc/$$/environ >/dev/null 2>&1 && echo own-readable
kill "$listener" && echo listener-stopped
sleep 0.5
python3 -c 'import socket; socket.socket().bind(("0.0.0.0", 22))' 2>&1 | tail -n1
python3 -c 'import socket; socket.socket().bind(("0.0.0.0", 2222)); print("bound-2222")'
"""


def test_the_published_ssh_port_cannot_be_taken_over_by_the_user(hub, sam, keys):
    """sshd runs as the user, but the published port is the container's 22, which only the entrypoint could bind."""
    hub.save_ssh_keys("sam", keys["sam"][1])  # earlier tests changed sam's keys
    assert _banner(sam["port"]).startswith(b"SSH-2.0-OpenSSH")  # positive control: OpenSSH answers
    result = ssh(sam["port"], "sam", sam["key"], TAKEOVER)
    lines = result.stdout.split("\n")
    assert result.returncode == 0, result.stderr
    # The listener and the sshd serving this very session are the user's processes, yet not open to them.
    assert re.fullmatch(r"listener=[0-9]+", lines[0]), lines  # exactly one listener, found
    assert "listener-private" in lines and "sshd-private" in lines and "own-readable" in lines, lines
    assert "listener-stopped" in lines
    # With the listener gone, port 22 is still out of the user's reach; any other port is theirs.
    assert any("PermissionError" in line and "Permission denied" in line for line in lines), lines
    assert "bound-2222" in lines
    # The published port now says nothing at all: no listener of the user's on the hub's host name.
    assert _banner(sam["port"]) == b""
    # The next start brings SSH back.
    hub.stop_server("sam")
    hub.spawn("sam")
    assert ssh(sam["port"], "sam", sam["key"]).stdout.strip() == "sam"


def test_ssh_page_shows_the_host_key_so_the_first_connection_is_verified(hub, sam, keys, tmp_path):
    hub.save_ssh_keys("sam", keys["sam"][1])
    page = hub.browser_session("sam").get(f"{hub.url}/hub/ssh", timeout=30).text
    known = re.search(r'<pre id="ssh-known-hosts">(.*?)</pre>', page, re.S)
    assert known, page[-2000:]
    line = known.group(1).strip()
    assert line.startswith(f"[127.0.0.1]:{sam['port']} ssh-ed25519 ")
    # The fingerprint shown is the one the server presents (ssh-keygen computes it from the page's line).
    (tmp_path / "known_hosts").write_text(line + "\n")
    shown = re.search(r'<code class="ssh-fingerprint">(SHA256:[^<]+)</code>', page).group(1)
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "known_hosts")], capture_output=True, text=True)
    assert shown in listed.stdout
    strict = ("-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}")
    args = ["ssh", "-p", str(sam["port"]), "-i", sam["key"], "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
    ok = subprocess.run([*args, *strict, "sam@127.0.0.1", "whoami"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "sam", ok.stderr
    # Negative control: another host key in known_hosts is refused under the same strict checking.
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    blob = (tmp_path / "other.pub").read_text().split()[1]
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sam['port']} ssh-ed25519 {blob}\n")
    bad = subprocess.run([*args, *strict, "sam@127.0.0.1", "whoami"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in bad.stderr, bad.stderr


def test_ssh_page_refuses_a_huge_form_before_reading_it_and_keeps_the_keys(hub, sam):
    session = hub.browser_session("sam")
    stored = _stored_keys(session, hub)
    page = session.get(f"{hub.url}/hub/ssh", timeout=30)
    huge = {"keys": "ssh-ed25519 " + "A" * (10 * 1024 * 1024), "_xsrf": xsrf_from(page.text)}
    r = session.post(f"{hub.url}/hub/ssh", data=huge, timeout=60)
    assert r.status_code == 413
    assert _stored_keys(session, hub) == stored
    # Positive control: a form of normal size is read, and its XSRF token is still checked.
    assert _save_keys(session, hub, stored).status_code == 200
    forged = session.post(f"{hub.url}/hub/ssh", data={"keys": stored, "_xsrf": "forged"}, timeout=30)
    assert forged.status_code == 403


def test_an_error_page_says_its_sentence_once(hub, sam):
    """JupyterHub's error page would print an HTTPError's sentence as the heading and again below it."""
    session = hub.browser_session("sam")
    page = session.get(f"{hub.url}/hub/ssh", timeout=30)
    huge = {"keys": "A" * (128 * 1024), "_xsrf": xsrf_from(page.text)}
    r = session.post(f"{hub.url}/hub/ssh", data=huge, timeout=60)
    assert r.status_code == 413
    body = r.text.split('<div class="error">', 1)[1].split("</div>", 1)[0]
    assert body.count("nothing was saved") == 1, body
    assert "<h1>413" in body, body


def test_a_token_that_may_only_start_the_server_cannot_add_an_ssh_key(hub, keys, tmp_path):
    """A course tool or a culler holds servers!user=dee: it may start dee's server, not get a shell in it."""
    _, intruder = keygen(tmp_path, "intruder")
    hub.save_ssh_keys("dee", keys["bob"][1])
    r = hub.api("POST", "/users/dee/tokens", json={"scopes": ["servers!user=dee"], "expires_in": 600})
    assert r.status_code == 201, r.text
    start_only = r.json()["token"]
    refused = hub.api("POST", "/users/dee/server", token=start_only, json={"ssh_keys": intruder})
    assert refused.status_code == 400 and "/hub/ssh" in refused.json()["message"]
    assert hub.container("dee") is None
    started = hub.api("POST", "/users/dee/server", token=start_only, json={})
    assert started.status_code in (201, 202), started.text  # positive control: the token does start it
    hub.wait_ready("dee")
    port = hub.server_state("dee")["ssh_port"]
    assert ssh(port, "dee", str(tmp_path / "intruder")).returncode == 255
    assert ssh(port, "dee", keys["bob"][0]).stdout.strip() == "dee"
    hub.stop_server("dee")


def test_a_removed_key_stays_removed_across_stop_start_and_hub_restart(hub, keys):
    hub.save_ssh_keys("eve", keys["bob"][1] + "\n" + keys["sam2"][1])
    hub.spawn("eve")
    port = hub.server_state("eve")["ssh_port"]
    assert ssh(port, "eve", keys["sam2"][0]).stdout.strip() == "eve"
    hub.save_ssh_keys("eve", keys["bob"][1])  # eve removes the sam2 key
    assert ssh(port, "eve", keys["sam2"][0]).returncode == 255
    hub.stop_server("eve")
    # devdock before 0.2 took keys in the spawn options, and JupyterHub keeps the last options to reuse them:
    # put such stale options back into the hub's database, as an upgraded hub would find them.
    hub.stop()
    db = sqlite3.connect(hub.data_dir / "jupyterhub.sqlite")
    stale = json.dumps({"profile": "desktop", "ssh_keys": keys["sam2"][1]})
    db.execute(
        "UPDATE spawners SET user_options = ? WHERE user_id = (SELECT id FROM users WHERE name = 'eve')", (stale,)
    )
    db.commit()
    db.close()
    hub.start()
    hub.spawn("eve")  # a start that sends no options re-uses the stored ones
    assert hub.server_state("eve")["ssh_port"] == port
    assert ssh(port, "eve", keys["sam2"][0]).returncode == 255
    assert ssh(port, "eve", keys["bob"][0]).stdout.strip() == "eve"  # positive control
    assert "ssh_keys" not in json.dumps(hub.user_model("eve")["servers"][""].get("user_options") or {})
    hub.stop_server("eve")

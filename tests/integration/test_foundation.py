"""The vertical slice on the real engine: spawn, lab, desktop, terminal, auth, persistence, stop."""

from __future__ import annotations

import time

import pytest
import requests

from tests.harness import PREFIX, RUN_ID, assert_desktop_answers, run_in_terminal, ws_connect, ws_handshake_status


@pytest.fixture(scope="module")
def alice(hub):
    """alice's running server and her token; bob exists too, with a token of his own."""
    hub.spawn("alice")
    token = hub.token("alice")
    url = hub.server_url("alice")
    # A terminal that stays open, so that refusals on its websocket cannot be a plain 404.
    r = requests.post(url + "api/terminals", headers={"Authorization": f"token {token}"}, timeout=30)
    r.raise_for_status()
    return {"token": token, "url": url, "bob_token": hub.token("bob"), "terminal": r.json()["name"]}


def test_spawn_serves_jupyterlab_through_the_proxy(hub, alice):
    r = requests.get(alice["url"] + "lab", headers={"Authorization": f"token {alice['token']}"}, timeout=30)
    assert r.status_code == 200
    assert "JupyterLab" in r.text
    assert "/user/alice" in hub.proxy_routes()


def test_desktop_page_served_through_the_proxy(alice):
    r = requests.get(alice["url"] + "desktop/", headers={"Authorization": f"token {alice['token']}"}, timeout=30)
    assert r.status_code == 200
    # devdock's noVNC page (it replaces jupyter-remote-desktop-proxy's): a screen element and its viewer module,
    # whose noVNC modules come through the same authenticated route.
    assert 'id="screen"' in r.text
    assert "devdock/desktop-static/viewer.bundle.js" in r.text
    headers = {"Authorization": f"token {alice['token']}"}
    bundle = requests.get(alice["url"] + "devdock/desktop-static/viewer.bundle.js", headers=headers, timeout=30)
    assert bundle.status_code == 200 and "clipboardPasteFrom" in bundle.text  # the viewer with noVNC in it
    bundle_url = alice["url"] + "devdock/desktop-static/viewer.bundle.js"
    anonymous = requests.get(bundle_url, timeout=30, allow_redirects=False)
    assert anonymous.status_code in (302, 401, 403), anonymous.status_code


def test_desktop_websocket_reaches_the_vnc_server(alice):
    assert_desktop_answers(alice["url"], alice["token"])


def test_terminal_runs_as_the_unprivileged_login(alice):
    output = run_in_terminal(alice["url"], alice["token"], "whoami; id -u", expect="\r\n1000")
    lines = [line.strip() for line in output.splitlines()]
    assert "alice" in lines, output
    assert "1000" in lines, output


# Every path a user server answers on, with how to probe it: (id, kind, path).
PROTECTED = [
    ("lab", "http", "lab"),
    ("contents-api", "http", "api/contents"),
    ("desktop-page", "http", "desktop/"),
    ("desktop-websocket", "ws", "desktop-websockify/"),
    ("selkies-page", "http", "selkies/"),
    ("selkies-websocket", "ws", "selkies/api/websockets"),
    ("terminal-websocket", "ws", "terminals/websocket/{terminal}"),
]


def _probe(url: str, kind: str, token: str | None) -> int:
    if kind == "ws":
        return ws_handshake_status(url, token)
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(url, headers=headers, allow_redirects=False, timeout=30).status_code


@pytest.mark.parametrize(("kind", "path"), [p[1:] for p in PROTECTED], ids=[p[0] for p in PROTECTED])
def test_anonymous_requests_are_refused(alice, kind, path):
    url = alice["url"] + path.format(terminal=alice["terminal"])
    status = _probe(url, kind, token=None)
    # Pages redirect to the hub's login (302); APIs and websockets answer 403.
    assert status in (302, 403), status
    # The owner gets through on the same path.
    assert _probe(url, kind, alice["token"]) in (200, 101)


@pytest.mark.parametrize(("kind", "path"), [p[1:] for p in PROTECTED], ids=[p[0] for p in PROTECTED])
def test_another_users_token_is_refused(alice, kind, path):
    url = alice["url"] + path.format(terminal=alice["terminal"])
    assert _probe(url, kind, alice["bob_token"]) == 403
    assert _probe(url, kind, alice["token"]) in (200, 101)


# VNC (5900-5910), noVNC/websockify (6080) and VNC-over-HTTP (5800-5801).
FORBIDDEN_PORTS = {*range(5900, 5911), 6080, 5800, 5801}


def _listening_tcp_ports(container) -> set[int]:
    out = container.exec_run(["cat", "/proc/net/tcp", "/proc/net/tcp6"]).output.decode()
    ports = set()
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_ghsa_vrq4_9hc3_cgp7_no_vnc_port_listens_on_tcp(hub, alice):
    # Bring the desktop up first, so that the VNC server is running while we look.
    ws = ws_connect(alice["url"] + "desktop-websockify/", alice["token"])
    ws.recv()
    try:
        container = hub.container("alice")
        processes = container.exec_run(["ps", "-eo", "args"]).output.decode()
        assert "Xtigervnc" in processes, processes
        assert "-rfbunixpath" in processes
        ports = _listening_tcp_ports(container)
        assert 8888 in ports, ports  # the check sees listeners: the single-user server is one
        assert not ports & FORBIDDEN_PORTS, sorted(ports & FORBIDDEN_PORTS)
    finally:
        ws.close()


def test_selkies_listens_on_no_tcp_port_only_on_its_unix_socket(hub, alice):
    container = hub.container("alice")
    before = _listening_tcp_ports(container)
    r = requests.get(alice["url"] + "selkies/", headers={"Authorization": f"token {alice['token']}"}, timeout=90)
    assert r.status_code == 200 and "<title>Selkies</title>" in r.text  # Selkies' own page, through the hub
    processes = container.exec_run(["ps", "-eo", "args"]).output.decode()
    assert "/opt/devdock/selkies/bin/selkies --unix-socket /tmp/jupyter-server-proxy-" in processes, processes
    owner = container.exec_run(["sh", "-c", "ps -o user= -p $(pgrep -f '^/opt/devdock/selkies/bin/python')"])
    assert owner.output.decode().split() == ["alice"], owner.output  # unprivileged: the user's own process
    assert "--enable-basic-auth=false" in processes and "--mode=websockets" in processes
    assert _listening_tcp_ports(container) == before, (before, _listening_tcp_ports(container))
    assert 8888 in before  # the check sees listeners
    # Nothing but the user can reach its socket: the folder jupyter-server-proxy made for it is theirs alone.
    folders = container.exec_run(["sh", "-c", "stat -c '%a %U' /tmp/jupyter-server-proxy-*"]).output.decode()
    assert folders.split() and {line for line in folders.splitlines()} == {"700 alice"}, folders


def test_user_processes_hold_no_capabilities(hub, alice):
    container = hub.container("alice")
    host_config = container.attrs["HostConfig"]
    assert host_config["Privileged"] is False
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    script = "grep -E '^(Uid|CapEff|CapPrm|NoNewPrivs)' /proc/$(pgrep -o -u 1000 -f singleuser)/status"
    status = container.exec_run(["sh", "-c", script]).output.decode()
    fields = dict(line.split(":", 1) for line in status.strip().splitlines())
    assert fields["Uid"].split()[0] == "1000"
    assert int(fields["CapEff"], 16) == 0
    assert int(fields["CapPrm"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"


def test_container_and_volume_names_and_labels(hub, alice, docker_client):
    container = hub.container("alice")
    assert container.name == f"{PREFIX}-alice"
    labels = container.labels
    assert labels["io.devdock.owner"] == "alice"
    assert labels["io.devdock.server"] == ""
    assert labels["io.devdock.login"] == "alice"
    assert labels["io.devdock.version"]
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    home = mounts["/home/alice"]
    assert home["Type"] == "volume" and home["Name"] == f"{PREFIX}-home-alice"
    volume = docker_client.volumes.get(f"{PREFIX}-home-alice")
    assert volume.attrs["Labels"]["io.devdock.owner"] == "alice"
    assert volume.attrs["Labels"]["io.devdock.test-run"] == RUN_ID


def test_home_survives_stop_start_and_container_removal(hub, docker_client):
    hub.spawn("carol")
    token = hub.token("carol")
    url = hub.server_url("carol")
    r = requests.put(
        url + "api/contents/notes.txt",
        json={"type": "file", "format": "text", "content": "keep me"},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    first = hub.container("carol").id

    hub.stop_server("carol")
    assert hub.container("carol") is None  # the container is removed on stop ...
    assert docker_client.volumes.get(f"{PREFIX}-home-carol")  # ... the home volume is not

    hub.spawn("carol")
    assert hub.container("carol").id != first
    r = requests.get(url + "api/contents/notes.txt", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "keep me"


def test_admin_stop_removes_container_and_route(hub):
    hub.spawn("dave")
    assert hub.container("dave") is not None
    assert "/user/dave" in hub.proxy_routes()
    hub.stop_server("dave")  # through the admin service's token, as the admin panel does
    assert hub.container("dave") is None
    assert "/user/dave" not in hub.proxy_routes()


def test_named_server_gets_its_own_container_and_home(hub, docker_client):
    hub.spawn("erin", server="gpu-work")
    container = hub.container("erin", "gpu-work")
    assert container.name == f"{PREFIX}-erin_gpu-work"
    assert container.labels["io.devdock.server"] == "gpu-work"
    destinations = {m["Destination"]: m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"}
    assert destinations["/home/erin"] == f"{PREFIX}-home-erin_gpu-work"
    hub.stop_server("erin", "gpu-work")
    assert hub.container("erin", "gpu-work") is None


def _vnc_servers(container) -> list[str]:
    out = container.exec_run(["pgrep", "-a", "Xtigervnc"]).output.decode()
    return [line for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def prestart_hub(make_hub):
    """A hub with the shipped ``desktop_prestart`` (the harness's hubs start the desktop when it is first opened)."""
    return make_hub("prestart", desktop_prestart=True)


def test_desktop_starts_with_the_server_and_is_handed_over_on_first_open(prestart_hub):
    """devdock starts the desktop next to the server (niced, the user's own), and the first open of the
    desktop gets that very VNC server through jupyter-remote-desktop-proxy, not a second one."""
    hub = prestart_hub
    hub.spawn("pia")
    container = hub.container("pia")
    deadline = time.monotonic() + 30
    while not _vnc_servers(container) and time.monotonic() < deadline:
        time.sleep(0.2)
    before = _vnc_servers(container)
    assert len(before) == 1, before  # running before anyone asked for the desktop
    assert "-rfbport -1" in before[0] and "/tmp/devdock-desktop." in before[0]  # unix socket only, no TCP
    listing = container.exec_run(["sh", "-c", "stat -c '%a %u' /tmp/devdock-desktop.*"]).output.decode().split()
    assert listing == ["700", "1000"], listing
    assert_desktop_answers(hub.server_url("pia"), hub.token("pia"))
    assert _vnc_servers(container) == before  # the same process: handed over, not started again
    hub.stop_server("pia")

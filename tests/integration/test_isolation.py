"""Isolation and hostile input on the real engine: each test is named after what it proves."""

from __future__ import annotations

import itertools
import random

import pytest
import requests

from tests.harness import PREFIX, ws_handshake_status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pair(hub):
    """Two running users, with their tokens."""
    for name in ("iso-a", "iso-b"):
        hub.spawn(name)
    return {name: hub.token(name) for name in ("iso-a", "iso-b")}


def _reach(container, ip: str, port: int) -> bool:
    """Can ``container`` open a TCP connection to ip:port (3 s)?"""
    script = f"timeout 3 bash -c '</dev/tcp/{ip}/{port}' 2>/dev/null && echo open || echo closed"
    return container.exec_run(["bash", "-c", script], user="1000").output.decode().strip() == "open"


def _ip(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def test_one_users_container_cannot_reach_another_users_container(hub, pair):
    a, b = hub.container("iso-a"), hub.container("iso-b")
    b_ip = _ip(b, hub.network)
    # The hub (on the host) reaches b: the ports are open ...
    assert requests.get(f"http://{b_ip}:8888/user/iso-b/api", timeout=10).status_code in (200, 403)
    # ... but from a's container, neither JupyterLab nor sshd of b can be reached.
    assert not _reach(a, b_ip, 8888)
    assert not _reach(a, b_ip, 2222)


def test_containers_reach_the_hub_api_but_not_the_proxy_api_or_public_port(hub, pair):
    a = hub.container("iso-a")
    hub_port = int(hub.env["DEVDOCK_HUB_PORT"])
    assert _reach(a, hub.gateway, hub_port)  # what jupyterhub-singleuser needs
    assert not _reach(a, hub.gateway, hub.proxy_api_port)  # configurable-http-proxy's API
    assert not _reach(a, hub.gateway, hub.port)  # the public proxy port is on 127.0.0.1 only


def test_no_docker_socket_and_no_privileges_inside(hub, pair):
    a = hub.container("iso-a")
    out = a.exec_run(
        ["sh", "-c", "ls /var/run/docker.sock /run/docker.sock 2>&1; id -u; sudo -n true 2>&1"], user="1000"
    )
    text = out.output.decode()
    assert "No such file" in text and "docker.sock\n" not in text.replace("No such file", "")
    assert "\n1000\n" in f"\n{text}"
    assert a.attrs["HostConfig"]["Privileged"] is False
    assert a.attrs["HostConfig"]["PidsLimit"] == 4096
    assert a.attrs["HostConfig"]["ShmSize"] == 512 * 1024**2


def test_admin_with_access_scope_gets_in_and_owner_too(hub, pair):
    url = hub.server_url("iso-a") + "api/contents"
    admin = hub.token("admin")
    assert requests.get(url, headers={"Authorization": f"token {admin}"}, timeout=30).status_code == 200
    assert requests.get(url, headers={"Authorization": f"token {pair['iso-a']}"}, timeout=30).status_code == 200
    assert ws_handshake_status(hub.server_url("iso-a") + "desktop-websockify/", admin) == 101


def test_cve_2024_28179_proxied_websocket_without_auth_is_refused(hub, pair):
    # jupyter-server-proxy < 4.1.1 proxied websockets without checking auth.
    assert ws_handshake_status(hub.server_url("iso-a") + "desktop-websockify/") in (302, 403)
    assert ws_handshake_status(hub.server_url("iso-a") + "desktop-websockify/", pair["iso-b"]) == 403


def test_cve_2023_48311_image_chosen_through_user_options_is_refused(hub):
    hub.create_user("imgpick")
    r = hub.api("POST", "/users/imgpick/server", json={"image": "debian:bookworm-slim"})
    assert r.status_code == 400
    assert "Unknown spawn option" in r.json()["message"]
    assert hub.container("imgpick") is None


# --- a fuzzed set of hostile user_options ---------------------------------------------------------


def hostile_options(n: int = 300, seed: int = 20261123) -> list:
    """Deterministic junk: unknown keys, wrong types, huge values, other users, path tricks, images, GPUs."""
    rng = random.Random(seed)
    values = [
        None, True, -1, 0, 10**9, -(10**9), 3.14, 1e308, "", " ", "a" * 5000, "../../etc/passwd",
        "desktop/../../root", "alice", "admin", "iso-a", "devdock/desktop:latest", "debian:bookworm-slim",
        "evil/image:latest", "\x00", "ü" * 100, "<script>alert(1)</script>", "${HOME}", "$(id)", "'; DROP TABLE",
        [], ["desktop"], {}, {"profile": "desktop"}, {"$ne": None},
    ]  # fmt: skip
    keys = [
        "image", "gpus", "gpu_ids", "privileged", "mem_limit", "cpu_limit", "volumes", "user", "uid", "name",
        "server", "environment", "cmd", "network", "profile_list", "__class__", "", "PROFILE", "profile ",
    ]  # fmt: skip
    cases = []
    for value in values:  # every junk value as the profile
        if value is not None and value != "":
            cases.append({"profile": value})
    for key, value in itertools.product(keys, values[:12]):  # unknown keys, alone or next to a valid profile
        cases.append({key: value})
        cases.append({"profile": "desktop", key: value})
    for value in values:
        if not isinstance(value, str):
            cases.append({"ssh_keys": value})
    cases += [{"ssh_keys": "ssh-rsa AAAA junk"}, {"ssh_keys": 'command="sh" ssh-ed25519 AAAAC3Nz'}]
    rng.shuffle(cases)
    return cases[:n]


def test_hundreds_of_hostile_spawn_options_are_refused_and_nothing_is_created(hub, docker_client):
    cases = hostile_options()
    assert len(cases) >= 300
    user = "fuzzed"
    hub.create_user(user)
    statuses = {}
    for options in cases:
        r = hub.api("POST", f"/users/{user}/server", json=options)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert 400 <= r.status_code < 500, (options, r.status_code, r.text[:300])
        assert r.json().get("message"), options
    assert hub.container(user) is None
    assert not docker_client.volumes.list(filters={"name": f"{PREFIX}-home-{user}"})
    assert "ssh_port" not in hub.server_state(user)
    # and the same user can still start normally afterwards
    hub.spawn(user, options={"profile": "desktop"})
    hub.stop_server(user)


USERNAMES = ["Zoë.Müller", "o'brien", "user.with.dots", "x" * 60]


@pytest.mark.parametrize("name", USERNAMES, ids=["unicode", "quote", "dots", "long"])
def test_hard_usernames_get_working_servers(hub, name):
    hub.spawn(name.lower())
    container = hub.container(name.lower())
    login = container.labels["io.devdock.login"]
    out = container.exec_run(["sh", "-c", "id -un"], user="1000").output.decode().strip()
    assert out == login
    hub.stop_server(name.lower())

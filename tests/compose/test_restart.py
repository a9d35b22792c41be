"""Restart safety: `restart hub` and `down` + `up` (without -v) keep users' servers, routes, SSH and data.

bob's server runs and has written a file; bob is signed in in a browser. After each restart the same container
(same id, never restarted) still serves bob through the proxy, on the same route and through the SSH gateway
with the same host keys, with his file,
and his browser session still works: the hub's database and cookie secret live in the hub-data volume, and the
proxy (its own service) or the restarted hub puts every route back.
"""

from __future__ import annotations

import subprocess

import pytest
import requests

from tests.compose.stack import Person
from tests.compose.test_journey import save_key_and_connect_through_the_gateway
from tests.harness import run_in_terminal


@pytest.fixture(scope="module")
def bob(stack, docker_client, browser, tmp_path_factory):
    """bob's running server (the "desktop" profile), a file in his home, and a signed-in browser."""
    stack.spawn("bob", {"profile": "desktop"})
    token = stack.token("bob")
    url = stack.user_url("bob")
    out = run_in_terminal(url, token, "echo kept-$((40 + 2)) > ~/restart.txt; cat ~/restart.txt", expect="kept-42")
    assert "kept-42" in out, out

    person = Person(browser, stack)
    person.sign_in("bob")
    over_ssh, config, env = save_key_and_connect_through_the_gateway(
        person, tmp_path_factory.mktemp("bob-ssh"), "bob", "true"
    )
    assert over_ssh.returncode == 0, over_ssh.stderr
    container = stack.user_container(docker_client, "bob")
    state = {
        "token": token,
        "url": url,
        "person": person,
        "container_id": container.id,
        "started_at": container.attrs["State"]["StartedAt"],
        "ssh_config": config,
        "ssh_env": env,
        "route": stack.route("bob")["target"],
    }
    yield state
    person.close()
    stack.stop("bob")


def assert_bob_unharmed(stack, docker_client, bob):
    # The hub still knows bob's server is running...
    server = stack.api("GET", "/users/bob").json()["servers"][""]
    assert server["ready"], server
    # ...it is the same container, never restarted...
    container = stack.user_container(docker_client, "bob")
    assert container.id == bob["container_id"]
    assert container.status == "running"
    assert container.attrs["State"]["StartedAt"] == bob["started_at"]
    # ...the proxy routes to it as before, and it answers through the proxy...
    assert stack.route("bob")["target"] == bob["route"]
    status = requests.get(bob["url"] + "api/status", headers={"Authorization": f"token {bob['token']}"}, timeout=30)
    assert status.status_code == 200, status.text
    # ...with bob's file, and his ssh config still takes him in through the gateway, host keys and all.
    out = run_in_terminal(bob["url"], bob["token"], "cat ~/restart.txt", expect="kept-42")
    assert "kept-42" in out, out
    again = subprocess.run(["ssh", "-F", bob["ssh_config"], "devdock", "cat ~/restart.txt"], capture_output=True,
                           text=True, timeout=60, env=bob["ssh_env"], stdin=subprocess.DEVNULL)  # fmt: skip
    assert again.stdout.strip() == "kept-42", again.stderr
    page = bob["person"].page
    page.goto(f"{stack.url}/hub/ssh")
    # The browser session survived: still signed in, not sent back to the identity provider.
    assert page.url.startswith(f"{stack.url}/hub/ssh"), page.url
    assert "ProxyCommand ssh -T devdock-gateway bob" in page.inner_text("#ssh-gateway-config")


def test_users_network_isolates_containers(stack, docker_client, bob):
    network = docker_client.networks.get(stack.network)
    assert network.attrs["Options"].get("com.docker.network.bridge.enable_icc") == "false"
    assert bob["container_id"] in network.attrs["Containers"]


def test_restart_hub_keeps_servers_routes_and_sessions(stack, docker_client, bob):
    stack.compose("restart", "hub")
    stack.wait_ready()
    assert_bob_unharmed(stack, docker_client, bob)
    assert "bob still running" in stack.compose("logs", "--no-color", "hub").stdout


def test_down_and_up_keep_servers_routes_and_sessions(stack, docker_client, bob):
    stack.down()
    # Everything of the stack is gone but bob's container, which kept running.
    assert stack.compose("ps", "-q").stdout.strip() == ""
    assert stack.user_container(docker_client, "bob").status == "running"
    stack.compose("up", "-d")
    stack.wait_ready()
    # A new proxy started empty: the hub put bob's route back.
    assert_bob_unharmed(stack, docker_client, bob)
    # The identity provider kept its users' passwords (oidc-data volume).
    assert stack.credentials() == stack.passwords

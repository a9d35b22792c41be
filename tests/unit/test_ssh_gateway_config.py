"""The SSH gateway's pure parts: who keeps a key (the key store, read backwards), and the ~/.ssh/config lines and
targets devdock shows, whatever the username (the gateway's forced command gets them percent-encoded)."""

from __future__ import annotations

import subprocess
from urllib.parse import unquote

import pytest
from traitlets.config import Config

from devdock_spawner.ssh import KeyStore, parse_key, parse_keys
from tests.unit.test_spawner import make_spawner


def key_line(tmp_path, name: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    return (tmp_path / f"{name}.pub").read_text().strip()


def test_gateway_owners_of_a_key_are_the_users_who_keep_it_and_nobody_else(tmp_path):
    shared, own, stranger = key_line(tmp_path, "lab"), key_line(tmp_path, "mine"), key_line(tmp_path, "other")
    store = KeyStore(str(tmp_path / "keys"))
    store.save("alice", parse_keys(f"{shared}\n{own}"))
    store.save("bob@example.org", [parse_key(shared)])
    assert store.owners_of(" ".join(shared.split()[:2])) == ["alice", "bob@example.org"]
    assert store.owners_of(own) == ["alice"]  # with its comment, too
    assert store.owners_of(stranger) == []
    assert store.owners_of("ssh-ed25519 not-a-key") == []
    # A file that names another owner than its name says (a collision, a copied file) counts for nobody.
    (tmp_path / "keys" / "mallory.pub").write_text(f"# devdock keys of alice\n{stranger}\n")
    assert store.owners_of(stranger) == []
    store.save("alice", [])
    assert store.owners_of(own) == []  # a removed key belongs to nobody at once


TARGETS = [
    ("plain", "alice", "", "alice", "devdock"),
    ("named", "alice", "gpu-1", "alice/gpu-1", "devdock-gpu-1"),
    ("email", "bob@example.org", "", "bob%40example.org", "devdock"),
    ("hostile", 'eve" ; rm -rf ~ #', "x y", "eve%22%20%3B%20rm%20-rf%20~%20%23/x%20y", None),
]


@pytest.mark.parametrize(
    ("username", "server", "target", "alias"), [t[1:] for t in TARGETS], ids=[t[0] for t in TARGETS]
)
def test_gateway_target_and_alias_of_a_server(username, server, target, alias):
    spawner = make_spawner(username, server)
    assert spawner.ssh_gateway_target == target
    user, _, name = spawner.ssh_gateway_target.partition("/")
    assert (unquote(user), unquote(name)) == (username, server)  # what the gateway decodes
    assert all(c not in spawner.ssh_gateway_target for c in ' "\\;\n')  # nothing a shell or sshd would split on
    if alias:
        assert spawner.ssh_gateway_alias == alias


def test_gateway_config_block_is_what_a_user_pastes():
    config = Config()
    config.DevDockSpawner.ssh_mode = "gateway"
    config.DevDockSpawner.ssh_gateway_host = "gpu01.example.org"
    config.DevDockSpawner.ssh_gateway_port = 2200
    spawner = make_spawner("alice", "proj", config=config)
    assert spawner.ssh_via_gateway and not spawner.ssh_via_port
    assert spawner.ssh_gateway_block().splitlines() == [
        "Host devdock-gateway", "    HostName gpu01.example.org", "    Port 2200", "    User devdock",
    ]  # fmt: skip
    lines = spawner.ssh_gateway_config().splitlines()
    assert lines[0] == "Host devdock-proj" and "    ProxyCommand ssh -T devdock-gateway alice/proj" in lines
    assert f"    User {spawner.login_name}" in lines and "    HostKeyAlias devdock-proj" in lines


@pytest.mark.parametrize(("mode", "gateway", "port"), [("ports", False, True), ("gateway", True, False),
                                                       ("both", True, True)])  # fmt: skip
def test_ssh_mode_chooses_the_ways_in(mode, gateway, port):
    config = Config()
    config.DevDockSpawner.ssh_mode = mode
    spawner = make_spawner(config=config)
    assert (spawner.ssh_via_gateway, spawner.ssh_via_port) == (gateway, port)
    spawner.ssh_port = 42001
    assert (spawner.ssh_endpoint is not None) == port  # no published port is shown in gateway mode


NAMES_IN_SSH_CONFIG = [
    ("email", "alice@example.org", "alice%40example.org"),
    ("percent", "100%", "100%25"),
    ("unicode", "Zoë", "Zo%C3%AB"),
    ("line-separator", "eve\u2028x", "eve%E2%80%A8x"),
    ("hostile", 'eve" ; rm -rf ~ #', "eve%22%20%3B%20rm%20-rf%20~%20%23"),
]


@pytest.mark.parametrize(
    ("username", "target"), [n[1:] for n in NAMES_IN_SSH_CONFIG], ids=[n[0] for n in NAMES_IN_SSH_CONFIG]
)
def test_gateway_config_block_writes_percent_as_ssh_reads_it(tmp_path, username, target):
    """The real OpenSSH client reads the page's block and runs its ProxyCommand (here a stand-in ``ssh`` that
    writes down its arguments): the gateway is asked for the percent-encoded name, whatever the name."""
    config = Config()
    config.DevDockSpawner.ssh_mode = "gateway"
    spawner = make_spawner(username, config=config)
    block = spawner.ssh_gateway_config()
    assert f"ProxyCommand ssh -T devdock-gateway {target.replace('%', '%%')}\n" in block
    stand_in = tmp_path / "bin" / "ssh"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "args"}\n')
    stand_in.chmod(0o755)
    (tmp_path / "config").write_text(
        f"{block}Host *\n    BatchMode yes\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n"
    )
    env = {"PATH": f"{stand_in.parent}:/usr/bin:/bin", "HOME": str(tmp_path), "SHELL": "/bin/sh"}
    subprocess.run(["/usr/bin/ssh", "-F", str(tmp_path / "config"), spawner.ssh_gateway_alias, "true"],
                   env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip
    assert (tmp_path / "args").read_text().splitlines() == ["-T", "devdock-gateway", target]
    assert unquote(target) == username

"""Distinct users never share a home: another owner's volume is refused, and homes made by devdock 0.1's naming
(32-bit hashes) are found again by their owner label, never by their name alone."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import requests

from tests.harness import PREFIX, RUN_ID, RUN_LABEL, keygen, ssh


def old_slug(name: str, max_length: int = 40) -> str:
    """How devdock 0.1 named a user: the folded name, '--' and 8 hex digits of its SHA-256 (written out here)."""
    if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) and len(name) <= max_length:
        return name
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[: max_length - 10].rstrip("-") or "x"
    return f"{base}--{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def make_home(client, name: str, owner: str, server: str = "", login: str = "", files: dict | None = None):
    """A home volume as an earlier devdock (or an attacker's choice of name) left it, with files in it."""
    labels = {RUN_LABEL: RUN_ID, "io.devdock.managed": "true", "io.devdock.owner": owner, "io.devdock.server": server}
    if login:
        labels["io.devdock.login"] = login
    client.volumes.create(name=name, labels=labels)
    script = " && ".join(f"echo {content} > /h/{path} && chown 1000:1000 /h/{path}" for path, content in files.items())
    client.containers.run(
        "debian:bookworm-slim", ["sh", "-c", script], volumes={name: {"bind": "/h"}}, remove=True, network_mode="none"
    )


def test_a_home_made_by_devdock_0_1_is_found_again_with_its_files_login_and_keys(hub, docker_client, tmp_path):
    user = "zoë.q"
    legacy_login = old_slug(user, 32)
    assert legacy_login != user and len(legacy_login.split("--")[1]) == 8
    home = f"{PREFIX}-home-{old_slug(user)}"
    make_home(docker_client, home, owner=user, login=legacy_login, files={"thesis.tex": "chapter-one"})
    # The key file of that time: named after the old slug, no owner line.
    key_path, key_line = keygen(tmp_path, "zoe")
    (hub.data_dir / "ssh-keys").mkdir(exist_ok=True)
    (hub.data_dir / "ssh-keys" / f"{old_slug(user)}.pub").write_text(key_line + "\n")

    hub.spawn(user)
    container = hub.container(user)
    mounts = {m["Destination"]: m.get("Name") for m in container.attrs["Mounts"]}
    assert mounts == {f"/home/{legacy_login}": home}
    out = container.exec_run(["sh", "-c", "id -un; cat $HOME/thesis.tex"], user="1000").output.decode().split()
    assert out == [legacy_login, "chapter-one"]
    assert ssh(hub.server_state(user)["ssh_port"], legacy_login, key_path).stdout.strip() == legacy_login
    new_name = docker_client.volumes.list(filters={"name": f"{PREFIX}-home-zoe-q--"})
    assert [v.name for v in new_name] == [home]  # no second, empty home was made
    hub.stop_server(user)


def test_a_volume_another_user_owns_is_never_mounted_and_stays_as_it_was(hub, docker_client):
    # mallory's home name, holding victor's files (a collision, or a volume renamed by hand): refused.
    mallory_home = f"{PREFIX}-home-mallory"
    make_home(docker_client, mallory_home, owner="victor", files={"secret.txt": "victors-data"})
    hub.create_user("mallory")
    r = hub.api("POST", "/users/mallory/server")
    assert r.status_code == 409, r.text
    assert "belongs to another user" in r.json()["message"] and mallory_home in r.json()["message"]
    assert hub.container("mallory") is None
    volume = docker_client.volumes.get(mallory_home)
    assert volume.attrs["Labels"]["io.devdock.owner"] == "victor"
    out = docker_client.containers.run(
        "debian:bookworm-slim", ["cat", "/h/secret.txt"], volumes={mallory_home: {"bind": "/h"}}, remove=True
    )
    assert out.decode().strip() == "victors-data"
    # Positive control: the same check lets a user with no such volume start.
    hub.spawn("mallory2")
    hub.stop_server("mallory2")


def test_an_old_home_of_another_owner_is_not_adopted_by_a_look_alike_name(hub, docker_client):
    """The attack of devdock 0.1: a username whose old slug equals the victim's. Labels decide, not names."""
    user = "ann.b"
    make_home(docker_client, f"{PREFIX}-home-{old_slug(user)}", owner="ann_b", files={"notes.txt": "anns-notes"})
    hub.spawn(user)
    container = hub.container(user)
    homes = [m["Name"] for m in container.attrs["Mounts"] if m["Destination"].startswith("/home/")]
    assert homes and homes[0] != f"{PREFIX}-home-{old_slug(user)}"
    listing = container.exec_run(["sh", "-c", "ls $HOME"], user="1000").output.decode()
    assert "notes.txt" not in listing
    url = hub.server_url(user) + "api/contents"
    assert requests.get(url, headers={"Authorization": f"token {hub.token(user)}"}, timeout=30).status_code == 200
    hub.stop_server(user)

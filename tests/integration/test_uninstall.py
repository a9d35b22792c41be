"""scripts/uninstall.sh on the real engine, for a hub of its own (its own hub id, network, gateway name and folders):
what devdock put on the host goes, homes stay unless asked, and another hub's things on the same engine stay."""

from __future__ import annotations

import json
import os
import subprocess

from tests.harness import IMAGE, ROOT, RUN_ID, RUN_LABEL


def _uninstall(env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(ROOT / "scripts/uninstall.sh"), *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def _exists(client, kind: str, name: str) -> bool:
    try:
        getattr(client, kind).get(name)
        return True
    except Exception:  # noqa: BLE001 - docker.errors.NotFound
        return False


def test_uninstall_removes_devdock_s_things_keeps_homes_until_asked_and_leaves_another_hub_alone(
    docker_client, tmp_path
):
    hub_id, other = f"uninstall-{RUN_ID}", f"uninstall-other-{RUN_ID}"
    names = {k: f"devdock-un{RUN_ID}-{k}" for k in ("net", "gw", "alice", "home", "other", "otherhome")}
    test = {RUN_LABEL: RUN_ID}

    def labels(hub: str) -> dict:
        return {**test, "io.devdock.managed": "true", "io.devdock.hub": hub, "io.devdock.owner": "alice"}

    client = docker_client
    client.networks.create(names["net"], labels=test)
    run = {"command": ["sleep", "600"], "detach": True, "entrypoint": []}
    client.containers.run(IMAGE, name=names["gw"], labels=test, network_mode="none", **run)
    client.containers.run(IMAGE, name=names["alice"], labels=labels(hub_id), network=names["net"], **run)
    client.containers.run(IMAGE, name=names["other"], labels=labels(other), network_mode="none", **run)
    client.volumes.create(names["home"], labels=labels(hub_id))
    client.volumes.create(names["otherhome"], labels=labels(other))
    state, docker_dir = tmp_path / "var-lib-devdock", tmp_path / "etc-docker"
    (state / "homes").mkdir(parents=True)
    (state / "homes" / f"{names['home']}.img").write_bytes(b"\0" * 16)
    (state / "run").mkdir()
    docker_dir.mkdir()
    daemon_json = docker_dir / "daemon.json"
    daemon_json.write_text(json.dumps({"features": {"cdi": True}, "log-level": "info"}))
    (docker_dir / ".devdock-cdi").write_text("set by engine.sh\n")
    env = {
        "DEVDOCK_HUB_ID": hub_id,
        "DEVDOCK_NETWORK": names["net"],
        "DEVDOCK_SSH_GATEWAY_NAME": names["gw"],
        "DEVDOCK_STATE_DIR": str(state),
        "DEVDOCK_DAEMON_JSON": str(daemon_json),
        "DEVDOCK_SYSTEMD_UNIT": str(tmp_path / "devdock.service"),
    }
    try:
        _uninstall(env)
        for name in ("net", "gw", "alice"):
            assert not _exists(client, "networks" if name == "net" else "containers", names[name]), name
        assert _exists(client, "volumes", names["home"]), "the home went without --remove-homes"
        assert (state / "homes" / f"{names['home']}.img").exists() and not (state / "run").exists()
        assert json.loads(daemon_json.read_text()) == {"log-level": "info"}  # the admin's own setting stays
        # Another hub on the same engine: untouched.
        assert _exists(client, "containers", names["other"]) and _exists(client, "volumes", names["otherhome"])

        _uninstall(env, "--remove-homes")
        assert not _exists(client, "volumes", names["home"]) and not state.exists()
        assert _exists(client, "volumes", names["otherhome"])
    finally:
        for name in ("gw", "alice", "other"):
            subprocess.run(["docker", "rm", "-f", names[name]], capture_output=True)
        for name in ("home", "otherhome"):
            subprocess.run(["docker", "volume", "rm", "-f", names[name]], capture_output=True)
        subprocess.run(["docker", "network", "rm", names["net"]], capture_output=True)


def test_uninstall_leaves_a_daemon_json_it_did_not_change(docker_client, tmp_path):
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"features": {"cdi": True}}))
    env = {
        "DEVDOCK_HUB_ID": f"uninstall-none-{RUN_ID}",
        "DEVDOCK_NETWORK": f"devdock-un{RUN_ID}-absent",
        "DEVDOCK_SSH_GATEWAY_NAME": f"devdock-un{RUN_ID}-absent",
        "DEVDOCK_STATE_DIR": str(tmp_path / "state"),
        "DEVDOCK_DAEMON_JSON": str(daemon_json),
        "DEVDOCK_SYSTEMD_UNIT": str(tmp_path / "devdock.service"),
    }
    _uninstall(env)
    assert json.loads(daemon_json.read_text()) == {"features": {"cdi": True}}  # no note from engine.sh: the admin's

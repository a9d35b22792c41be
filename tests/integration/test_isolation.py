"""Isolation and hostile input on the real engine: each test is named after what it proves."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shlex
import time
from datetime import UTC, datetime

import pytest
import requests

from tests.harness import IMAGE, PREFIX, RUN_ID, RUN_LABEL, ws_handshake_status


@pytest.fixture(scope="module")
def pair(hub):
    """Two running users, with their tokens."""
    for name in ("iso-a", "iso-b"):
        hub.spawn(name)
    return {name: hub.token(name) for name in ("iso-a", "iso-b")}


def _reach(container, ip: str, port: int) -> bool:
    """Can ``container`` open a TCP connection to ip:port (3 s)? Fails the test if it could not even try."""
    script = f"timeout 3 bash -c '</dev/tcp/{ip}/{port}' 2>/dev/null && echo open || echo closed"
    result = container.exec_run(["bash", "-c", script], user="1000")
    answer = result.output.decode().strip()
    assert result.exit_code == 0 and answer in ("open", "closed"), (result.exit_code, answer)
    return answer == "open"


def _ip(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def test_one_users_container_cannot_reach_another_users_container(hub, pair):
    a, b = hub.container("iso-a"), hub.container("iso-b")
    b_ip = _ip(b, hub.network)
    # The hub (on the host) reaches b: the ports are open ...
    assert requests.get(f"http://{b_ip}:8888/user/iso-b/api", timeout=10).status_code in (200, 403)
    # ... but from a's container, neither JupyterLab nor sshd of b can be reached,
    assert not _reach(a, b_ip, 8888)
    assert not _reach(a, b_ip, 22)
    # while the same probe from a does reach the hub API (positive control: the probe works).
    assert _reach(a, hub.gateway, int(hub.env["DEVDOCK_HUB_PORT"]))


def test_containers_reach_the_hub_api_but_not_the_proxy_api_or_public_port(hub, pair):
    a = hub.container("iso-a")
    hub_port = int(hub.env["DEVDOCK_HUB_PORT"])
    assert _reach(a, hub.gateway, hub_port)  # what jupyterhub-singleuser needs
    assert not _reach(a, hub.gateway, hub.proxy_api_port)  # configurable-http-proxy's API
    assert not _reach(a, hub.gateway, hub.port)  # the public proxy port is on 127.0.0.1 only


def test_no_docker_socket_and_no_privileges_inside(hub, pair):
    a = hub.container("iso-a")
    out = a.exec_run(["sh", "-c", "ls /var/run/docker.sock /run/docker.sock 2>&1; id -u"], user="1000")
    text = out.output.decode()
    assert "No such file" in text and "docker.sock\n" not in text.replace("No such file", "")
    assert "\n1000\n" in f"\n{text}"
    # No way back to root: no sudo, su refuses, and no_new_privs is set on the user's processes.
    root = a.exec_run(["sh", "-c", "command -v sudo || echo no-sudo; su -c 'id -u' root </dev/null; echo su=$?"],
                      user="1000").output.decode()  # fmt: skip
    assert "no-sudo" in root and "su=1" in root and "\n0\n" not in f"\n{root}", root
    status = a.exec_run(["sh", "-c", "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status"], user="1000").output.decode()
    assert "NoNewPrivs:\t1" in status and "CapEff:\t0000000000000000" in status, status
    assert a.attrs["HostConfig"]["Privileged"] is False
    assert a.attrs["HostConfig"]["PidsLimit"] == 4096
    assert a.attrs["HostConfig"]["ShmSize"] == 512 * 1024**2


def test_hardening_is_what_the_real_containers_hostconfig_says(hub, pair):
    """Read back from Docker, not from devdock's constants: what the engine really applied."""
    host = hub.container("iso-a").attrs["HostConfig"]
    caps = sorted(c.removeprefix("CAP_") for c in host["CapAdd"])
    assert caps == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "NET_BIND_SERVICE", "SETGID", "SETUID"]
    assert host["Sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "1024"}
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == hub.network
    assert host["PidMode"] == "" and host["UTSMode"] == "" and host["UsernsMode"] == ""
    assert host["IpcMode"] == "private"
    assert host["CgroupnsMode"] == "private"
    assert not host["Devices"] and not host["DeviceRequests"] and not host.get("VolumesFrom")
    assert not any("docker.sock" in b or b.split(":")[0] in ("/", "/run", "/var/run") for b in host["Binds"] or [])


UNDOING = [
    ("cap-add", {"cap_add": ["SYS_ADMIN"]}, "SYS_ADMIN"),
    ("cap-drop", {"cap_drop": ["NET_RAW"]}, "cap_drop ALL"),
    ("host-network", {"network_mode": "host"}, "network_mode"),
    ("host-pid", {"pid_mode": "host"}, "pid_mode"),
    ("privileged", {"privileged": True}, "privileged"),
    ("nnp-dropped", {"security_opt": ["seccomp=unconfined"]}, "security_opt"),
    ("socket-mount", {"mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}]}, "socket"),
    ("host-device", {"devices": ["/dev/zero:/dev/nvidia9:rwm"]}, "devices"),
]


@pytest.fixture(scope="module")
def undoing_hub(make_hub, tmp_path_factory):
    """A hub whose extra_host_config is read from a file at every spawn, so one hub tries each setting."""

    data = tmp_path_factory.mktemp("undoing")
    setting = data / "extra_host_config.json"
    setting.write_text("{}")
    create = data / "extra_create_kwargs.json"  # the same for extra_create_kwargs (see _undoing_create)
    create.write_text("{}")
    extra = (
        f"import json\nc.DevDockSpawner.extra_host_config = lambda spawner: json.load(open({str(setting)!r}))\n"
        f"c.DevDockSpawner.extra_create_kwargs = lambda spawner: json.load(open({str(create)!r}))\n"
    )
    return make_hub(data_dir=data, extra_config=extra), setting


@pytest.mark.parametrize(("extra_host", "named"), [u[1:] for u in UNDOING], ids=[u[0] for u in UNDOING])
def test_site_configuration_that_undoes_the_hardening_is_refused_with_a_sentence(undoing_hub, extra_host, named):
    import json

    hub, setting = undoing_hub
    user = "undo"
    setting.write_text(json.dumps(extra_host))
    hub.create_user(user)
    r = hub.api("POST", f"/users/{user}/server")
    if r.status_code == 202:  # the refusal comes from the start itself; wait for it to fail
        for _ in range(120):
            info = hub.api("GET", f"/users/{user}").json()["servers"].get("")
            if not info:
                break
            time.sleep(0.5)
    assert hub.container(user) is None
    log = hub.log_tail(300)
    assert "Refusing to spawn" in log and named in log.split("Refusing to spawn")[-1], log[-3000:]
    # Positive control: the same hub with a harmless setting starts the server.
    setting.write_text(json.dumps({"ulimits": [{"Name": "nofile", "Soft": 4096, "Hard": 4096}]}))
    hub.spawn(user)
    assert hub.container(user).attrs["HostConfig"]["Ulimits"][0]["Soft"] == 4096
    hub.stop_server(user)


#: More of what configuration could use to undo the hardening, each refused with a sentence naming it:
#: (id, extra_create_kwargs, extra_host_config, what the sentence names).
UNDOING_MORE = [
    ("root-user", {"user": "0"}, {}, "extra_create_kwargs user='0'"),
    ("another-entrypoint", {"entrypoint": ["jupyterhub-singleuser"]}, {}, "extra_create_kwargs entrypoint"),
    ("ld-preload", {"environment": {"LD_PRELOAD": "/home/undo/.x.so"}}, {}, "LD_PRELOAD"),
    ("proc", {}, {"binds": {"/proc": {"bind": "/host-proc", "mode": "ro"}}}, "/proc is the host's"),
    ("containerd", {}, {"binds": ["/run/containerd:/c:ro"]}, "/run is the host's"),
    (
        "var-run-through-a-volumes-options",
        {},
        {
            "mounts": [
                {
                    "Type": "volume",
                    "Source": f"{PREFIX}-sneaky",
                    "Target": "/r",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"type": "none", "o": "bind", "device": "/var/run"},
                        }
                    },
                }
            ]
        },
        "Docker socket",
    ),  # fmt: skip
    ("seccomp-profile", {}, {"security_opt": ["no-new-privileges:true", "seccomp=/tmp/allow.json"]}, "seccomp"),
    ("runtime", {}, {"runtime": "sysbox-runc"}, "runtime='sysbox-runc'"),
    ("server-port-on-every-address", {}, {"port_bindings": {"8888": ("0.0.0.0",)}}, "port 8888 on 0.0.0.0"),
]


def test_a_root_user_a_preloaded_library_host_folders_custom_profiles_or_a_wide_port_are_refused_and_clean_starts(
    undoing_hub, docker_client
):
    """Each setting of UNDOING_MORE on a real hub: the start fails, the hub's log says why in a sentence that names
    the setting, no container and no volume is made; then the same hub with a clean configuration starts."""
    import json

    hub, setting = undoing_hub
    create = setting.with_name("extra_create_kwargs.json")
    user = "undo-more"
    hub.create_user(user)
    try:
        for case, extra_create, extra_host, named in UNDOING_MORE:
            create.write_text(json.dumps(extra_create))
            setting.write_text(json.dumps(extra_host))
            before = len(hub.log_path.read_text(errors="replace"))
            r = hub.api("POST", f"/users/{user}/server")
            assert r.status_code in (202, 500), (case, r.status_code, r.text)
            for _ in range(120):
                if not hub.api("GET", f"/users/{user}").json()["servers"].get(""):
                    break
                time.sleep(0.5)
            log = hub.log_path.read_text(errors="replace")[before:]
            refusal = log.split("Refusing to spawn", 1)[-1].split("\n", 1)[0] if "Refusing to spawn" in log else ""
            assert named in refusal, (case, log[-3000:])
            assert hub.container(user) is None, case
            assert not docker_client.volumes.list(filters={"name": f"{PREFIX}-sneaky"}), case
        # Positive control: the same hub, the same user, a clean configuration.
        create.write_text("{}")
        setting.write_text("{}")
        hub.spawn(user)
        host = hub.container(user).attrs["HostConfig"]
        assert host["Runtime"] == "runc" and "no-new-privileges:true" in host["SecurityOpt"], host
        assert "8888/tcp" not in (host["PortBindings"] or {}), host["PortBindings"]
        hub.stop_server(user)
    finally:
        create.write_text("{}")
        setting.write_text("{}")


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


# --- what a user's server says to the hub ------------------------------------------------------------------------

#: A user's own Jupyter server config (~/.jupyter, theirs to write): api/devdock/status, which the hub's admin page
#: asks, answers whatever ~/.answer holds; "endless" streams spaces for ever, "huge" is valid JSON of 1 MiB.
LYING_SERVER_CONFIG = '''
import json
import os
from datetime import datetime, timezone
import devdock_ext
from jupyter_server.base.handlers import APIHandler
from tornado import web


def _lying_handler(watch):
    class Lie(APIHandler):
        _track_activity = False

        @web.authenticated
        async def get(self):
            with open(os.path.expanduser("~/.answer")) as f:
                answer = f.read()
            self.set_header("Content-Type", "application/json")
            if answer == "endless":
                while True:
                    self.write(b" " * 65536)
                    await self.flush()
            if answer == "huge":
                now = datetime.now(timezone.utc).isoformat()
                answer = json.dumps({"last_activity": now, "last_activity_source": "SSH", "padding": "x" * (1 << 20)})
            self.finish(answer)

    return Lie


devdock_ext._status_handler = _lying_handler
'''


def _answers(now: str) -> list[tuple[str, str]]:
    """(what the lying server answers, why the hub must not believe it)."""
    return [
        ("<html>not JSON</html>", "not JSON"),
        ("[1, 2, 3]", "not an object"),
        ('{"last_activity": "yesterday"}', "not a time"),
        ('{"last_activity": 1700000000}', "a number"),
        ('{"last_activity": "2026-01-01T00:00:00"}', "a time without its zone"),
        ('{"last_activity": "2999-01-01T00:00:00+00:00", "last_activity_source": "SSH"}', "in the future"),
        ('{"last_activity": "2001-01-01T00:00:00+00:00"}', "before the server started: an invented idle time"),
        ('{"last_activity": "' + "9" * 5000 + '"}', "a long string"),
        ("[" * 10_000, "nested past the parser's depth"),
        ("huge", "1 MiB of valid JSON with a true time: past the size the hub reads"),
        ("endless", "an answer that never ends"),
    ]


def _admin_row(page: str, user: str) -> str:
    row = re.search(rf'<tr data-user="{re.escape(user)}" data-server="\(default\)">(.*?)</tr>', page, re.S)
    assert row, page[-3000:]
    return row.group(1)


def test_admin_page_trusts_nothing_a_users_server_says_and_still_renders(hub):
    """A user's own server answers the admin page's activity question with junk, lies and floods (through a Jupyter
    config file in the user's home, as any user can write one): the page still renders for the admin, says
    "unknown" for that server, and shows another user's honest server as it is (the positive control); a valid
    answer from the same lying server is believed (the control of the mechanism itself)."""
    liar, honest = "ans-liar", "ans-honest"
    hub.spawn(liar)
    hub.spawn(honest)
    container = hub.container(liar)
    home = {"HOME": f"/home/{liar}"}
    script = (
        f"mkdir -p ~/.jupyter && printf %s {shlex.quote(LYING_SERVER_CONFIG)} > ~/.jupyter/jupyter_server_config.py"
    )
    assert container.exec_run(["sh", "-c", script], user="1000", environment=home).exit_code == 0
    hub.stop_server(liar)
    hub.spawn(liar)
    container = hub.container(liar)
    admin = hub.browser_session("admin")

    def answer(text: str) -> None:
        put = container.exec_run(
            ["sh", "-c", f"printf %s {shlex.quote(text)} > ~/.answer"], user="1000", environment=home
        )
        assert put.exit_code == 0, put.output

    def idle_of(page: str, user: str) -> str:
        return re.search(r'<td class="idle">(.*?)</td>', _admin_row(page, user), re.S).group(1)

    try:
        # Control: an answer that can be true is believed, from this very server.
        answer(json.dumps({"last_activity": datetime.now(UTC).isoformat(), "last_activity_source": "SSH"}))
        page = admin.get(f"{hub.url}/hub/devdock/admin", timeout=60)
        assert page.status_code == 200 and idle_of(page.text, liar) == "0 min (SSH)", idle_of(page.text, liar)
        for text, why in _answers(datetime.now(UTC).isoformat()):
            answer(text)
            page = admin.get(f"{hub.url}/hub/devdock/admin", timeout=60)
            assert page.status_code == 200, (why, page.status_code, page.text[-2000:])
            assert idle_of(page.text, liar) == "unknown", (why, idle_of(page.text, liar))
            assert re.fullmatch(r"\d+ min( \([\w ]+\))?", idle_of(page.text, honest)), (why, idle_of(page.text, honest))
        # A plausible time with a source that is not a plain name: the time is shown, the source is not.
        answer(json.dumps({"last_activity": datetime.now(UTC).isoformat(), "last_activity_source": "<b>x</b>" * 9}))
        page = admin.get(f"{hub.url}/hub/devdock/admin", timeout=60)
        assert idle_of(page.text, liar) == "0 min" and "&lt;b&gt;" not in page.text
        # The hub is still well: its API answers at once after the endless answer was cut.
        assert hub.api("GET", "/").status_code == 200
    finally:
        hub.stop_server(liar)
        hub.stop_server(honest)


def test_the_entrypoints_root_part_runs_no_program_from_the_path_a_configuration_names(docker_client, tmp_path):
    """A site's environment may put a folder of the user's first in PATH (conda in the home): the entrypoint's root
    part must not run the user's own ``id`` from it, the user's processes do (the control: PATH reaches them)."""
    folder = tmp_path / "userbin"
    folder.mkdir()
    fake = folder / "id"
    fake.write_text('#!/bin/sh\ntouch "/tmp/ran-as-$(/usr/bin/id -u)"\nexec /usr/bin/id "$@"\n')
    fake.chmod(0o755)
    os.chown(folder, 1000, 1000)
    os.chown(fake, 1000, 1000)
    out = docker_client.containers.run(
        IMAGE,
        ["sh", "-c", "id -u >/dev/null; ls /tmp"],
        environment={
            "PATH": "/userbin:/opt/devdock/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "DEVDOCK_LOGIN": "pathy",
            "DEVDOCK_SSH": "0",
        },
        volumes={str(folder): {"bind": "/userbin", "mode": "ro"}},
        labels={RUN_LABEL: RUN_ID},
        remove=True,
    ).decode()
    assert "ran-as-1000" in out, out  # the user's processes get the configured PATH
    assert "ran-as-0" not in out, out  # root never ran the user's program

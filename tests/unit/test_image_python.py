"""The images' own Python, on its pure decisions: devdock_ext (activity and the cull warning, inside users' servers)
and the SSH gateway's scripts (gatewaylib, devdock-gateway-keys, devdock-gateway-connect).

Each is imported from its file in images/ (tests/unit/image_code.py); the real programs in real containers are in
tests/integration (test_isolation, test_ssh_gateway) and tests/e2e. devdock-gpu-check is tests/unit/test_gpu_check.py;
the agreements with the hub's own Python are tests/unit/test_image_contract.py.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from tests.unit import image_code

ext = image_code.devdock_ext()
gatewaylib = image_code.gatewaylib()
keys = image_code.gateway_keys()
connect = image_code.gateway_connect()


# --- devdock_ext: what counts as activity ---------------------------------------------------------------------------


def _process(proc, pid, title: bytes):
    (proc / pid).mkdir()
    (proc / pid / "cmdline").write_bytes(title)


def test_ssh_sessions_count_the_users_logged_in_sshd_children_only(tmp_path):
    _process(tmp_path, "101", b"sshd: alice@pts/0\0")
    _process(tmp_path, "102", b"sshd: alice@notty\0")  # scp, sftp, VS Code Remote-SSH
    _process(tmp_path, "103", b"sshd: alice [priv]\0")  # a connection still authenticating
    _process(tmp_path, "104", b"/usr/sbin/sshd\0-i\0")  # the listener's child before login
    _process(tmp_path, "105", b"bash\0")
    (tmp_path / "106").mkdir()  # a process that ended while we looked: no cmdline
    (tmp_path / "self").mkdir()
    assert ext.ssh_sessions(str(tmp_path)) == 2


def test_activity_is_recorded_only_forward():
    watch = ext.IdleWatch(_app())
    later, earlier = datetime(2026, 12, 1, 12, 0, tzinfo=UTC), datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    watch.record("devdock-ssh", later)
    watch.record("devdock-ssh", earlier)
    assert watch.settings["last_activity_times"] == {"devdock-ssh": later}


def test_activity_sources_are_named_in_words_for_the_admin_page():
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    settings = {
        "started": t - timedelta(hours=2),
        "api_last_activity": t - timedelta(minutes=5),
        "terminal_last_activity": "not a time",  # ignored
        "last_activity_times": {"devdock-desktop": t - timedelta(minutes=1), "devdock-ssh": t},
    }
    app = _app(settings)
    app.kernel_manager = SimpleNamespace(last_kernel_activity=t - timedelta(minutes=30))
    assert ext.IdleWatch(app).sources() == {
        "start": t - timedelta(hours=2),
        "JupyterLab": t - timedelta(minutes=5),
        "desktop input": t - timedelta(minutes=1),
        "SSH": t,
        "kernels": t - timedelta(minutes=30),
    }


# --- devdock_ext: the warning before the culler stops the server ----------------------------------------------------


def _app(settings=None, last: datetime | None = None):
    settings = {} if settings is None else settings
    web_app = SimpleNamespace(settings=settings, last_activity=lambda: last or datetime.now(UTC))
    return SimpleNamespace(web_app=web_app)


def _status(monkeypatch, idle_timeout=0, max_age=0, warning=600, idle=0.0, running=0.0, **env):
    for name, value in {
        "DEVDOCK_CULL_IDLE_TIMEOUT": idle_timeout,
        "DEVDOCK_CULL_MAX_AGE": max_age,
        "DEVDOCK_CULL_WARNING": warning,
        **env,
    }.items():
        monkeypatch.setenv(name, str(value))
    now = datetime.now(UTC)
    app = _app({"started": now - timedelta(seconds=running)}, last=now - timedelta(seconds=idle))
    return ext.IdleWatch(app).status()


def test_no_limits_no_stop_and_no_warning(monkeypatch):
    status = _status(monkeypatch, idle=10**6, running=10**6)
    assert (status["stops_at"], status["warning"]) == (None, None)
    assert "notice" not in status


def test_the_maximum_age_counts_from_the_hubs_start_not_the_server_process(monkeypatch):
    """The culler counts a run's age from JupyterHub's ``started`` (a start that waited in line: its turn); the
    server process starts seconds later, and its warning must name the culler's time, not its own."""
    hub_started = datetime.now(UTC) - timedelta(minutes=10)
    status = _status(monkeypatch, max_age=3600, running=60, DEVDOCK_CULL_STARTED=hub_started.isoformat())
    assert datetime.fromisoformat(status["stops_at"]) == hub_started + timedelta(hours=1)
    # Control: without the hub's time (an older hub), the process's own start is the best it has.
    monkeypatch.delenv("DEVDOCK_CULL_STARTED")
    status = _status(monkeypatch, max_age=3600, running=60)
    left = datetime.fromisoformat(status["stops_at"]) - datetime.now(UTC)
    assert timedelta(minutes=58) < left <= timedelta(minutes=59)


def test_a_time_limit_the_hub_changed_is_read_and_a_booking_cut_says_why(monkeypatch, tmp_path):
    """The hub writes a new maximum age into the server when its user extends it or a GPU booking cuts it short
    (root-owned files); the warning then counts with it, and names the booking."""
    monkeypatch.setattr(ext.IdleWatch, "EXTENDED", str(tmp_path / "cull-max-age"))
    monkeypatch.setattr(ext.IdleWatch, "CUT_SHORT", str(tmp_path / "cull-why"))
    status = _status(monkeypatch, max_age=7200, running=3000)
    assert status["warning"] is None  # 70 minutes left: not yet
    (tmp_path / "cull-max-age").write_text("3300.500\n")
    (tmp_path / "cull-why").write_text("its GPUs are booked for the group ml-course from Tue 14:00 CET")
    status = _status(monkeypatch, max_age=7200, running=3000)
    assert "stopped in about 5 minutes: its GPUs are booked for the group ml-course" in status["warning"]
    (tmp_path / "cull-why").unlink()  # extended, not cut: the usual words
    assert "maximum running time" in _status(monkeypatch, max_age=7200, running=3000)["warning"]


def test_a_stop_far_off_is_announced_without_a_warning(monkeypatch):
    status = _status(monkeypatch, idle_timeout=3600, idle=60)
    assert status["warning"] is None
    stops_at = datetime.fromisoformat(status["stops_at"])
    assert timedelta(minutes=58) < stops_at - datetime.now(UTC) <= timedelta(minutes=59)


@pytest.mark.parametrize(
    ("idle_left", "expected"),
    [(600, "in about 10 minutes"), (130, "in about 2 minutes"), (61, "in about 1 minute "), (20, "in a moment")],
    ids=["at-the-warning", "minutes", "one-minute", "seconds"],
)
def test_the_idle_warning_says_when_and_how_to_keep_the_server(monkeypatch, idle_left, expected):
    warning = _status(monkeypatch, idle_timeout=3600, idle=3600 - idle_left + 0.5)["warning"]
    assert expected in warning
    assert "nobody has used it" in warning and "Do anything in it" in warning


def test_the_maximum_age_warning_asks_to_save_work(monkeypatch):
    warning = _status(monkeypatch, idle_timeout=3600, max_age=7200, running=7000)["warning"]
    assert "maximum running time" in warning and "Save your work" in warning


@pytest.mark.parametrize(("warning", "poll"), [(600, 20), (40, 10), (8, 5), (0, 20)])
def test_jupyterlab_polls_often_enough_to_warn_in_time(monkeypatch, warning, poll):
    assert _status(monkeypatch, warning=warning)["poll_seconds"] == poll


def test_safe_mode_is_told_with_how_to_find_the_package(monkeypatch):
    notice = _status(monkeypatch, DEVDOCK_SAFE_MODE="exit 3")["notice"]
    assert "(exit 3)" in notice and "pip uninstall" in notice


def test_a_limit_that_is_not_a_number_means_none(monkeypatch):
    monkeypatch.setenv("DEVDOCK_CULL_IDLE_TIMEOUT", "eight hours")
    monkeypatch.delenv("DEVDOCK_CULL_WARNING", raising=False)
    assert ext._seconds("DEVDOCK_CULL_IDLE_TIMEOUT") == 0
    assert ext._seconds("DEVDOCK_CULL_WARNING", 600) == 600


# --- devdock_ext: a full home ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [(512, "512 bytes"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB"), (5 * 2**40, "5.0 TiB"), (2**50, "1024.0 TiB")],
)
def test_sizes_in_binary_units(size, text):
    assert ext._human(size) == text


def _disk(monkeypatch, total_blocks: int, free_blocks: int):
    stat = SimpleNamespace(f_blocks=total_blocks, f_bavail=free_blocks, f_frsize=4096)
    monkeypatch.setattr(ext.os, "statvfs", lambda path: stat)


def test_a_home_under_two_percent_free_is_called_full_with_what_to_do(monkeypatch):
    _disk(monkeypatch, total_blocks=262144, free_blocks=2621)  # 1 GiB, 1% free
    notice = ext.home_full_notice("/home/alice", 2**30)
    assert "Your home is full" in notice and "of its 1.0 GiB are used" in notice
    assert "Your files are safe" in notice and "du -sh" in notice


def test_a_home_with_room_or_without_a_limit_says_nothing(monkeypatch):
    _disk(monkeypatch, total_blocks=262144, free_blocks=10000)  # about 4% free
    assert ext.home_full_notice("/home/alice", 2**30) == ""
    _disk(monkeypatch, total_blocks=262144, free_blocks=0)
    assert ext.home_full_notice("/home/alice", 0) == ""  # no size limit: the disk's own business


def test_the_home_full_notice_reaches_the_status(monkeypatch):
    _disk(monkeypatch, total_blocks=262144, free_blocks=0)
    assert "Your home is full" in _status(monkeypatch, DEVDOCK_HOME_SIZE=2**30)["notice"]


# --- devdock_ext: cookies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "secure"),
    [('{"secure": true}', True), ('{"secure": false}', False), ("{}", False), ("not json", False), ("", False)],
    ids=["https-hub", "http-hub", "no-options", "garbage", "unset"],
)
def test_the_xsrf_cookie_is_secure_exactly_when_the_hubs_cookies_are(monkeypatch, options, secure):
    monkeypatch.setenv("JUPYTERHUB_COOKIE_OPTIONS", options)
    settings = {}
    assert ext._secure_xsrf_cookie(settings) is secure
    assert settings.get("xsrf_cookie_kwargs", {}).get("secure", False) is secure


# --- gatewaylib: one GET to the hub ---------------------------------------------------------------------------------


def test_a_chunked_body_is_put_back_together():
    assert gatewaylib._unchunk(b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n") == b"Wikipedia"


def test_the_hubs_refusal_carries_its_own_sentence():
    assert gatewaylib._answer(202, b'{"server": "alice"}') == ({"server": "alice"}, 202)
    with pytest.raises(gatewaylib.HubError) as refused:
        gatewaylib._answer(403, b'{"message": "this key is not one of alice\'s"}')
    assert (refused.value.status, str(refused.value)) == (403, "this key is not one of alice's")
    with pytest.raises(gatewaylib.HubError, match="the hub answered 502"):
        gatewaylib._answer(502, b"<html>Bad Gateway</html>")


def _one_answer_server(response: bytes):
    """A socket that answers one HTTP request with ``response``; what it received lands in the returned list."""
    server = socket.create_server(("127.0.0.1", 0))
    received = []

    def serve():
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(65536))
            conn.sendall(response)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], received


def test_get_asks_the_hub_with_the_token_and_reads_a_chunked_answer():
    body = json.dumps({"users": ["bob@example.org"], "routes": {}}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    port, received = _one_answer_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    )
    config = {"hub_api": f"http://127.0.0.1:{port}/hub/api", "token": "s3cret"}
    answer = gatewaylib.get(config, "/devdock/ssh-gateway/keys", {"key": "ssh-ed25519 AAAA+/="}, timeout=5)
    assert answer == ({"users": ["bob@example.org"], "routes": {}}, 200)
    request = received[0].decode()
    assert request.startswith("GET /hub/api/devdock/ssh-gateway/keys?key=ssh-ed25519+AAAA%2B%2F%3D HTTP/1.1\r\n")
    assert "\r\nAuthorization: token s3cret\r\n" in request


# --- devdock-gateway-keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "source"),
    [("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"), ("::ffff:192.0.2.7", "192.0.2.7")],
    ids=["ipv6-by-its-64", "ipv4-mapped"],
)
def test_a_client_is_counted_by_its_address_or_ipv6_64(address, source):
    assert keys.ipv6_source(address) == source


def test_each_source_may_ask_the_hub_at_its_rate_and_others_are_not_held_back(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(keys, "LIMITS", str(tmp_path / "lookups"))
    monkeypatch.setattr(keys, "time", SimpleNamespace(time=lambda: clock[0]))
    config = {"token": "t", "lookup_rate": 1, "lookup_burst": 3}
    assert [keys.allowed(config, "192.0.2.1") for _ in range(5)] == [(True, 0)] * 3 + [(False, 1), (False, 2)]
    assert keys.allowed(config, "192.0.2.2") == (True, 0)
    clock[0] += 2  # two tokens back
    assert [keys.allowed(config, "192.0.2.1")[0] for _ in range(3)] == [True, True, False]
    assert keys.allowed({**config, "lookup_rate": 0}, "192.0.2.1") == (True, 0)  # 0: no limit
    assert keys.allowed(config, "") == (True, 0)  # an address that cannot be told is not limited


def test_the_second_ask_of_a_login_is_answered_from_the_first_for_two_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "CACHE", str(tmp_path / "cache"))
    answer = {"users": ["alice"], "routes": {"alice": "10.0.0.5:22"}}
    path, cached = keys.cached("ssh-ed25519 AAAA")
    assert cached is None
    keys.keep(path, answer)
    assert keys.cached("ssh-ed25519 AAAA") == (path, answer)
    assert keys.cached("ssh-ed25519 BBBB")[1] is None
    os.utime(path, (0, 0))  # an old answer
    assert keys.cached("ssh-ed25519 AAAA")[1] is None


def test_the_key_line_lets_the_key_reach_only_its_owners_servers(monkeypatch, capsys):
    monkeypatch.setattr(keys.gatewaylib, "settings", lambda: {})
    monkeypatch.setattr(
        keys, "owners", lambda config, key: {"users": ['eve" x'], "routes": {"eve%22%20x": "10.0.0.9:22"}}
    )
    assert keys.main(["devdock-gateway-keys", "devdock", "ssh-ed25519", "A" * 68]) == 0
    line = capsys.readouterr().out.strip()
    options, _, key = line.partition('" ')
    assert options == 'restrict,command="/usr/local/bin/devdock-gateway-connect eve%22%20x eve%2522%2520x=10.0.0.9:22'
    assert key == "ssh-ed25519 " + "A" * 68


@pytest.mark.parametrize(
    "argv",
    [["x", "alice", "ssh-ed25519", "A" * 68], ["x", "devdock", "ssh-dss", "A" * 68], ["x", "devdock", "ssh-rsa", "A;"]],
    ids=["another-account", "unknown-key-type", "not-a-key"],
)
def test_nothing_is_asked_or_printed_for_what_is_not_a_devdock_key(monkeypatch, capsys, argv):
    monkeypatch.setattr(keys, "owners", lambda *a: pytest.fail("the hub was asked"))
    assert keys.main(argv) == 0
    assert capsys.readouterr().out == ""


def test_a_hub_that_does_not_answer_refuses_the_key_and_says_so(monkeypatch, capsys):
    def down(config, key):
        raise gatewaylib.HubError(503, "down")

    monkeypatch.setattr(keys.gatewaylib, "settings", lambda: {})
    monkeypatch.setattr(keys, "owners", down)
    assert keys.main(["x", "devdock", "ssh-ed25519", "A" * 68]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "the hub did not answer: down" in captured.err


# --- devdock-gateway-connect ----------------------------------------------------------------------------------------


@pytest.fixture
def relayed(monkeypatch):
    """devdock-gateway-connect with its network stood in for: ``where`` records where it connected, ``asked`` what
    it asked the hub; ``hub`` is the hub's answer."""
    calls = SimpleNamespace(where=[], asked=[], hub=({"host": "10.0.0.7", "port": 22, "server": "alice's"}, ""))
    monkeypatch.setattr(connect, "connect", lambda host, port: calls.where.append((host, str(port))) or "socket")
    monkeypatch.setattr(connect, "relay", lambda sock: 0)
    monkeypatch.setattr(connect, "log", lambda line: None)

    def ask_hub(user, server):
        calls.asked.append((user, server))
        return calls.hub

    monkeypatch.setattr(connect, "ask_hub", ask_hub)
    return calls


def test_a_running_server_the_keys_command_named_is_reached_without_asking_again(monkeypatch, relayed):
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "bob%40example.org/gpu-1")
    command = keys.forced_command(["bob@example.org"], {"bob%40example.org/gpu-1": "10.0.0.5:22"})
    assert connect.main(command.split()) == 0
    assert (relayed.where, relayed.asked) == ([("10.0.0.5", "22")], [])


def test_a_server_not_running_at_the_key_check_is_asked_for(monkeypatch, relayed):
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "alice/proj")
    assert connect.main(keys.forced_command(["alice"], {"alice": "10.0.0.5:22"}).split()) == 0
    assert (relayed.asked, relayed.where) == ([("alice", "proj")], [("10.0.0.7", "22")])


def test_the_only_owner_of_a_key_needs_to_name_no_server(monkeypatch, relayed):
    monkeypatch.delenv("SSH_ORIGINAL_COMMAND", raising=False)
    assert connect.main(keys.forced_command(["alice"], {"alice": "10.0.0.5:22"}).split()) == 0
    assert relayed.where == [("10.0.0.5", "22")]


@pytest.mark.parametrize(
    ("wanted", "owners", "said"),
    [
        ("", ["alice", "bob"], "name the server"),
        ("alice proj", ["alice"], "name one server"),
        ("alice/proj/x", ["alice"], "name one server"),
        ("bob", ["alice"], "this key does not belong to 'bob'"),
    ],
    ids=["shared-key-without-a-name", "a-space", "two-slashes", "someone-elses"],
)
def test_what_the_gateway_refuses_it_explains(monkeypatch, relayed, capsys, wanted, owners, said):
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", wanted)
    assert connect.main(keys.forced_command(owners, {}).split()) == 1
    assert said in capsys.readouterr().err
    assert relayed.where == [] and relayed.asked == []


def test_the_hubs_reason_reaches_the_user(monkeypatch, relayed, capsys):
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "alice")
    relayed.hub = (None, "alice's server is stopped: start it on the hub")
    assert connect.main(keys.forced_command(["alice"], {}).split()) == 1
    assert "devdock gateway: alice's server is stopped" in capsys.readouterr().err


def test_while_the_hub_starts_the_server_the_user_is_told_once(monkeypatch, capsys):
    answers = [
        ({"server": "alice's server"}, 202),
        ({"server": "alice's server"}, 202),
        ({"host": "h", "port": 22}, 200),
    ]
    monkeypatch.setattr(connect.gatewaylib, "settings", lambda: {})
    monkeypatch.setattr(connect.gatewaylib, "get", lambda config, path, query: answers.pop(0))
    monkeypatch.setattr(connect.time, "sleep", lambda s: None)
    monkeypatch.delenv("SSH_USER_AUTH", raising=False)
    assert connect.ask_hub("alice", "") == ({"host": "h", "port": 22}, "")
    assert capsys.readouterr().err.count("starting alice's server, one moment") == 1


def test_the_key_offered_is_read_from_sshds_auth_info(tmp_path, monkeypatch):
    info = tmp_path / "auth"
    info.write_text("keyboard-interactive\npublickey ssh-ed25519 AAAAC3Nza alice@laptop\n")
    monkeypatch.setenv("SSH_USER_AUTH", str(info))
    assert connect.offered_key() == "ssh-ed25519 AAAAC3Nza alice@laptop"
    monkeypatch.setenv("SSH_USER_AUTH", str(tmp_path / "gone"))
    assert connect.offered_key() == ""

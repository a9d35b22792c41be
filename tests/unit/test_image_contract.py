"""The contract between the hub and devdock's desktop image, held from both sides.

- The ``DEVDOCK_*`` variables (devdock_spawner/contract.py): the environment a real spawner builds for a container,
  the names the hub's sources set, and the names the files of images/desktop use are each exactly the table's.
- The four decisions written once in Python and once in the image, run side by side on tables of awkward inputs:
  the login name (naming.login_name against the entrypoint's check, run by /bin/sh), the lowest uid, when the culler
  stops a server (culler.decide against devdock_ext's countdown) and the SSH gateway's target encoding
  (``ssh_gateway_target`` against devdock-gateway-keys and devdock-gateway-connect).
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets import TraitError
from traitlets.config import Config, PyFileConfigLoader

from devdock_spawner import DevDockSpawner, DevDockSwarmSpawner, contract, culler, naming
from devdock_spawner.gpu import GPU
from tests.unit import fake_docker, image_code
from tests.unit.test_spawner import make_spawner

ROOT = image_code.ROOT
NAME = re.compile(r"DEVDOCK_[A-Z0-9_]+")
CONTRACT_SH = image_code.DESKTOP_ROOTFS / "opt/devdock/lib/devdock-contract.sh"
#: Enough of JupyterHub's ``Hub`` object for ``Spawner.get_env`` (no hub runs in the unit tier).
HUB = SimpleNamespace(
    public_host="", api_url="http://127.0.0.1:8081/hub/api", base_url="/hub/", url="http://127.0.0.1:8081/hub/"
)


def _differences(what: str, found: dict[str, set[str]], table: dict[str, set[str]]) -> list[str]:
    lines = []
    for name in sorted(set(found) | set(table)):
        if name not in table:
            lines.append(f"{name}: {what} {sorted(found[name])}, and contract.py does not list it: add it there")
        elif name not in found:
            lines.append(f"{name}: contract.py says {sorted(table[name])}, but {what} nowhere")
        elif found[name] != table[name]:
            lines.append(f"{name}: {what} {sorted(found[name])}, contract.py says {sorted(table[name])}")
    return lines


def test_contract_names_are_devdock_variables_listed_once():
    every = [v.name for v in (*contract.SPAWNER_TO_IMAGE, *contract.IMAGE_OWN)]
    assert len(every) == len(set(every))
    assert all(NAME.fullmatch(name) for name in every)
    assert all(v.meaning and v.set_by for v in (*contract.SPAWNER_TO_IMAGE, *contract.IMAGE_OWN))


# --- the hub's side ---------------------------------------------------------------------------------------------


def devdocks_own_config(monkeypatch) -> Config:
    """devdock's jupyterhub_config.py as scripts/up.sh starts the hub (DEVDOCK_HUB_IP spares it asking Docker)."""
    monkeypatch.setenv("DEVDOCK_DUMMY_PASSWORD", "example-password")
    monkeypatch.setenv("DEVDOCK_HUB_IP", "172.17.0.1")
    return PyFileConfigLoader("jupyterhub_config.py", str(ROOT)).load_config()


def _env_of(created: dict) -> dict[str, str]:
    """The environment in what the spawner handed Docker: a container's ``environment``, a service's ``Env``."""
    if "environment" in created:
        return dict(created["environment"])
    return dict(e.partition("=")[::2] for e in created["task_template"]["ContainerSpec"]["Env"])


async def created_environment(spawner_class, config: Config, **this_start) -> dict[str, str]:
    """The environment of the container (or Swarm service) ``spawner_class`` creates, as handed to Docker, with
    ``this_start``: what ``start()`` computes for one spawn before it creates it (the home's size limit, the GPUs)."""
    created: dict = {}

    def create(**kwargs):
        created.update(kwargs)
        return {"Id": "c0ffee", "ID": "c0ffee"}

    image = {"Id": "sha256:c0ffee", "Config": {"Cmd": ["jupyterhub-singleuser"]}}
    spawner = fake_docker.make(
        spawner_class, config, inspect_image=image, create_container=create, create_service=create
    )
    spawner.hub = HUB
    for name, value in this_start.items():
        assert hasattr(spawner, name), f"{spawner_class.__name__} keeps no {name} any more: update this test"
        setattr(spawner, name, value)
    await spawner.create_object()
    return _env_of(created)


async def test_the_spawner_sets_exactly_the_contracts_variables(monkeypatch):
    """Every part on (SSH, a keyboard layout, a home with a size limit, GPUs; Swarm's GPUs): the variables set are
    the table's, no more, no fewer."""
    config = devdocks_own_config(monkeypatch)
    config.DevDockSpawner.ssh_enabled = True
    config.DevDockSpawner.desktop_keyboard_layout = "de"
    gpu = GPU(index=0, uuid="GPU-8f3c0e4a-1111-2222-3333-444455556666", name="NVIDIA H100")
    docker = await created_environment(DevDockSpawner, config, _home_limit=2**30, _allotted_gpus=(gpu,))
    swarm = await created_environment(DevDockSwarmSpawner, config, _gpu_count=1)
    set_by = {}
    for kind, env in (("DevDockSpawner", docker), ("DevDockSwarmSpawner", swarm)):
        for name in env:
            if name.startswith("DEVDOCK_"):
                set_by.setdefault(name, set()).add(kind)
    unknown, missing = sorted(set(set_by) - set(contract.names())), sorted(set(contract.names()) - set(set_by))
    assert not unknown, f"set in the container, but not in contract.py: {unknown} (by {set_by})"
    assert not missing, f"in contract.py, but no spawner set them here: {missing}"


def _qualified_keys(tree: ast.Module):
    """``(name, where)`` of each ``DEVDOCK_*`` key this module sets in a dict: a dict display's key, a keyword
    (``env.update(DEVDOCK_X=...)``), an item assignment or ``setdefault``; ``where`` is the enclosing function
    (``Class.method``), or the target of a module-level assignment."""

    def keys(node):
        if isinstance(node, ast.Dict):
            yield from (k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
        elif isinstance(node, ast.keyword) and node.arg:
            yield node.arg
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                yield node.slice.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setdefault":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.args[0].value

    def walk(node, where):
        for child in ast.iter_child_nodes(node):
            here = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                here = f"{where}.{child.name}" if where else child.name
            elif not where and isinstance(child, ast.Assign | ast.AnnAssign | ast.AugAssign):
                target = child.targets[0] if isinstance(child, ast.Assign) else child.target
                here = ast.unparse(target)
            for key in keys(child):
                if NAME.fullmatch(key):
                    yield key, here
            yield from walk(child, here)

    yield from walk(tree, "")


def test_the_hubs_sources_set_the_contracts_variables_where_the_table_says():
    """Every DEVDOCK_* key set in the hub's code, found by reading it: branches the test above does not reach too."""
    found: dict[str, set[str]] = {}
    files = [*sorted((ROOT / "devdock_spawner").glob("*.py")), ROOT / "jupyterhub_config.py"]
    for path in files:
        if path.name == "contract.py":
            continue
        for name, where in _qualified_keys(ast.parse(path.read_text())):
            found.setdefault(name, set()).add(f"{path.relative_to(ROOT)}: {where}")
    table = {v.name: set(v.set_by) for v in contract.SPAWNER_TO_IMAGE}
    assert not _differences("is set in", found, table), "\n".join(_differences("is set in", found, table))


# --- the image's side -------------------------------------------------------------------------------------------


def _image_path(path: Path) -> str:
    """Where a file of images/desktop is in the image (``/opt/devdock/...``); the Dockerfile as itself."""
    rootfs = image_code.DESKTOP_ROOTFS
    return f"/{path.relative_to(rootfs)}" if path.is_relative_to(rootfs) else str(path.relative_to(rootfs.parent))


def _names_used(path: Path) -> set[str]:
    """The DEVDOCK_* names a file's code uses: in Python its strings but not its docstrings, elsewhere every line
    but whole-line ``#`` comments."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        return set()
    if path.suffix == ".py" or (text.startswith("#!") and "python" in text.split("\n", 1)[0]):
        tree = ast.parse(text)
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        strings = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
        ]
        return {name for s in strings for name in NAME.findall(s)}
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return set(NAME.findall(code))


def image_uses() -> dict[str, set[str]]:
    """``{name: {file in the image, ...}}`` for every DEVDOCK_* name the desktop image's files use."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "images/desktop").rglob("*")):
        if path.is_file():
            for name in _names_used(path):
                found.setdefault(name, set()).add(_image_path(path))
    return found


def test_the_desktop_image_uses_exactly_the_contracts_variables():
    """What the image reads is what the spawner sets (or what the image sets for itself, contract.IMAGE_OWN), file
    by file: a variable only one side knows fails here or above."""
    table = {v.name: set(v.read_by) for v in contract.SPAWNER_TO_IMAGE if v.read_by}
    table |= {v.name: {*v.read_by, *v.set_by} for v in contract.IMAGE_OWN}
    differences = _differences("is used by", image_uses(), table)
    assert not differences, "\n".join(differences)


def test_the_scan_sees_code_and_skips_comments(tmp_path):
    script = tmp_path / "devdock-x"
    script.write_text('#!/bin/sh\n# DEVDOCK_IN_A_COMMENT\nx=${DEVDOCK_READ:-1}\n')
    module = tmp_path / "x.py"
    module.write_text('"""DEVDOCK_IN_A_DOCSTRING"""\nimport os\nos.environ.get("DEVDOCK_READ_TOO")\n')
    assert _names_used(script) == {"DEVDOCK_READ"}
    assert _names_used(module) == {"DEVDOCK_READ_TOO"}


# --- the login name and the uid -----------------------------------------------------------------------------------

#: Usernames an authenticator may hand the hub (OAuth emails, LDAP display names, IdP subjects).
USERNAMES = [
    ("plain", "alice"),
    ("capitals", "Alice"),
    ("dots", "bob.smith"),
    ("dashes-at-the-ends", "-x-"),
    ("double-dash", "a--b"),
    ("underscore", "a_b"),
    ("leading-underscore", "_apt"),
    ("leading-digit", "1alice"),
    ("digits-only", "12345"),
    ("email", "bob@example.org"),
    ("unicode-latin", "Zoë.Müller"),
    ("unicode-cjk", "山田太郎"),
    ("emoji", "🦊"),
    ("nothing-left-after-folding", "..."),
    ("32-characters", "a" * 32),
    ("33-characters", "a" * 33),
    ("very-long", "Bartholomew.Featherstonehaugh-Cholmondeley@university.example.org"),
    ("reserved-root", "root"),
    ("reserved-ubuntu", "ubuntu"),
    ("space", "ann lee"),
    ("line-break", "ann\nroot"),
    ("shell-characters", 'eve"; rm -rf / #$(id)'),
]


def image_accepts(function: str, values: list[str]) -> list[bool]:
    """Each value through the image's own check (devdock-contract.sh, sourced by the entrypoint), by /bin/sh."""
    script = '. "$1"; shift; for v; do if "$0" "$v" 2>/dev/null; then echo yes; else echo no; fi; done'
    result = subprocess.run(
        ["/bin/sh", "-c", script, function, str(CONTRACT_SH), *values], capture_output=True, text=True, check=True
    )
    return [answer == "yes" for answer in result.stdout.split()]


def test_the_image_accepts_every_login_name_the_hub_makes():
    logins = [naming.login_name(username) for _, username in USERNAMES]
    accepted = image_accepts("devdock_check_login", logins)
    refused = [(case, login) for (case, _), login, ok in zip(USERNAMES, logins, accepted, strict=True) if not ok]
    assert not refused


#: Login names as they might arrive some other way (a label read back, an older hub): the hub's check of a login
#: (naming.checked_login) never accepts one the image refuses.
LOGINS = [
    "alice", "a_b", "a-b", "alice--4813494d137e1631bba3", "x--274c9d19", "root", "Alice", "1alice", "a" * 33, "a.b",
    "ann\nroot", "", "bob@example.org", "zoë", "-a", "a b", "a--", "a" * 32,
]  # fmt: skip


def test_the_hub_never_accepts_a_login_the_image_refuses():
    image = dict(zip(LOGINS, image_accepts("devdock_check_login", LOGINS), strict=True))
    assert [login for login in LOGINS if naming.checked_login(login) and not image[login]] == []
    assert not image["Alice"] and not image["a" * 33] and not image["ann\nroot"] and not image[""]


@pytest.mark.parametrize(
    ("uid", "accepted"),
    [
        (str(contract.MIN_UID - 1), False),
        (str(contract.MIN_UID), True),
        ("0", False),
        ("60000", True),
        ("", False),
        ("-1", False),
        ("1e3", False),
        (" 1000", False),
        ("abc", False),
    ],
    ids=["just-below", "the-lowest", "root", "high", "empty", "negative", "exponent", "space", "word"],
)
def test_the_image_refuses_a_uid_below_the_contracts(uid, accepted):
    assert image_accepts("devdock_check_uid", [uid]) == [accepted]


def test_the_spawner_refuses_a_uid_the_image_would_refuse():
    """Refused when the hub reads its configuration, not after the container has started."""
    with pytest.raises(TraitError, match="login_uid"):
        make_spawner(config=Config({"DevDockSpawner": {"login_uid": contract.MIN_UID - 1}}))
    assert make_spawner(config=Config({"DevDockSpawner": {"login_uid": contract.MIN_UID}})).login_uid == 1000


# --- when the culler stops a server ---------------------------------------------------------------------------------

#: (case, idle_timeout, max_age, seconds idle now, seconds running now)
CULL = [
    ("idle-limit-only", 3600, 0, 600, 7200),
    ("max-age-only", 0, 7200, 0, 100),
    ("idle-comes-first", 3600, 86400, 0, 0),
    ("age-comes-first", 3600, 7200, 0, 6000),
    ("both-at-once-is-the-age", 3600, 3600, 0, 0),
    ("already-overdue", 60, 0, 120, 500),
    ("no-limits", 0, 0, 999999, 999999),
]


@pytest.mark.parametrize(
    ("idle_timeout", "max_age", "idle", "running"), [c[1:] for c in CULL], ids=[c[0] for c in CULL]
)
def test_the_servers_countdown_ends_when_the_culler_stops_it(idle_timeout, max_age, idle, running):
    """devdock_ext's stop time is the first moment culler.decide says stop, and both give the same reason."""
    ext = image_code.devdock_ext()
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    last, started = now - timedelta(seconds=idle), now - timedelta(seconds=running)
    rule = culler.ProfileRule(idle_timeout, max_age)
    policy = culler.Policy(idle_timeout=idle_timeout, default_profile="p", profiles={"p": rule})
    server = {"user_options": {"profile": "p"}}

    def decide(at: datetime):
        return culler.decide(server, at - last, at - started, policy)

    stop = ext.stop_time(last, started, idle_timeout, max_age)
    if stop is None:
        assert decide(now + timedelta(days=3650)) == (False, "")
        return
    stops_at, why = stop
    assert decide(stops_at - timedelta(seconds=1))[0] is False
    stopped, reason = decide(stops_at)
    assert stopped
    assert ("maximum age" in reason) == (why == "age"), reason


def test_the_server_reads_the_limits_the_culler_applies(monkeypatch):
    """The spawner hands its profile's rule over (DEVDOCK_CULL_*); the server's IdleWatch reads those numbers."""
    config = Config(
        {"DevDockSpawner": {"cull_idle_timeout": 1234, "cull_max_age": 5678, "cull_warning": 99, "profile_list": []}}
    )
    spawner = make_spawner(config=config)
    spawner.hub = HUB
    env = spawner.get_env()
    for name in ("DEVDOCK_CULL_IDLE_TIMEOUT", "DEVDOCK_CULL_MAX_AGE", "DEVDOCK_CULL_WARNING"):
        monkeypatch.setenv(name, env[name])
    app = SimpleNamespace(web_app=SimpleNamespace(settings={}))
    watch = image_code.devdock_ext().IdleWatch(app)
    rule = culler.rule_for(spawner.cull_policy(), "")
    assert (watch.idle_timeout, watch.max_age, watch.warning) == (rule.idle_timeout, rule.max_age, 99)
    assert (rule.idle_timeout, rule.max_age) == (1234, 5678)


END_TIME = image_code.DESKTOP_ROOTFS / "opt/devdock/bin/devdock-end-time"


@pytest.mark.parametrize(
    ("max_age", "started"),
    [("0", "2026-12-07T23:00:00+00:00"), ("3600", "2026-12-07T23:00:00+00:00"),
     ("259200", "2026-12-07T22:59:59.750000+00:00"), ("5400", "")],
)  # fmt: skip
def test_the_desktops_panel_and_jupyterlab_show_the_same_end_time(monkeypatch, max_age, started):
    """The desktop panel's "until ..." (devdock-end-time, /bin/sh) and JupyterLab's top bar (devdock_ext's status,
    ``ends_at``) count the end the same way, from the hub's start and the run's maximum age."""
    env = {"DEVDOCK_CULL_MAX_AGE": max_age, "DEVDOCK_CULL_STARTED": started, "TZ": "UTC", "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(["/bin/sh", str(END_TIME)], env=env, capture_output=True, text=True, check=True).stdout
    for name in ("DEVDOCK_CULL_MAX_AGE", "DEVDOCK_CULL_STARTED"):
        monkeypatch.setenv(name, env[name])
    ext = image_code.devdock_ext()
    monkeypatch.setattr(ext.IdleWatch, "EXTENDED", "/nonexistent/cull-max-age")
    settings = {"started": datetime(2026, 12, 8, 1, 2, 3, tzinfo=UTC)}  # the process's own start, later than the hub's
    app = SimpleNamespace(web_app=SimpleNamespace(settings=settings, last_activity=lambda: datetime.now(UTC)))
    ends_at = ext.IdleWatch(app).status()["ends_at"]
    if max_age == "0" or not started:  # no limit; a hub that does not say its start: the panel shows nothing
        assert "<txt></txt>" in shown and (ends_at is None) == (max_age == "0")
        return
    end = datetime.fromisoformat(ends_at)
    assert f"until {end:%A %Y-%m-%d %H:%M} UTC at the latest (its time limit)" in shown, (shown, ends_at)
    assert f"<txt> until {end:%a %H:%M} </txt>" in shown


# --- the SSH gateway's target ---------------------------------------------------------------------------------------

#: (case, hub username, server name)
TARGETS = [
    ("plain", "alice", ""),
    ("named-server", "alice", "proj"),
    ("email", "bob@example.org", ""),
    ("email-named", "bob@example.org", "gpu-1"),
    ("unicode", "Zoë.Müller", "données"),
    ("percent", "100%", "50%25"),
    ("equals-and-plus", "a=b+c", "x=y"),
    ("space-and-quotes", "ann 'the' \"lee\"", "my server"),
    ("capitals-dots-dashes", "Bob.Smith-Jr", "Proj.V2"),
]


@pytest.mark.parametrize(("username", "server"), [t[1:] for t in TARGETS], ids=[t[0] for t in TARGETS])
def test_the_gateway_finds_the_server_the_hub_names(username, server):
    """The hub's ``ssh_gateway_target``, devdock-gateway-keys' forced command (through a shell's word splitting, as
    sshd runs it) and devdock-gateway-connect's parsing agree: the route the hub gave is the one taken."""
    keys, connect = image_code.gateway_keys(), image_code.gateway_connect()
    target = make_spawner(username, server).ssh_gateway_target
    assert connect.target_of(username, server) == target
    assert connect.parse_target(target) == (username, server)
    command = shlex.split(keys.forced_command([username, "someone else"], {target: "10.0.0.5:22"}))
    assert command[0] == "/usr/local/bin/devdock-gateway-connect"
    allowed, routes = connect.parse_command(command[1:])
    assert allowed == [username, "someone else"]
    assert routes == {target: "10.0.0.5:22"}
    assert routes[connect.target_of(*connect.parse_target(target))] == "10.0.0.5:22"


def test_the_contract_reference_is_generated_from_contract_py():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs/generate_image_contract.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr

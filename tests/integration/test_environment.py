"""A researcher's environment: `pip install` without root that lands in the home and stays, the same environment in
notebooks, terminals and SSH, their own venvs as kernels, and the admin's way to add system packages.

No network beyond this machine: the packages are wheels the test writes itself, installed with --no-index."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import subprocess
import zipfile

import pytest
import requests

from tests.harness import IMAGE, RUN_ID, keygen, put_files, run_in_kernel, run_in_terminal, ssh


def make_wheel(name: str, version: str = "1.0", code: str = "") -> tuple[str, bytes]:
    """A pure-Python wheel (``<name>`` module plus a ``<name>-hello`` command), written by hand: a zip by PEP 427."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code or f"VALUE = {name!r}\ndef main():\n    print('hello from {name}')\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: devdock-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\n{name}-hello = {name}:main\n",
    }
    record = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{dist}/RECORD,,")
        z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


def put_wheels(container, login: str, *names: str) -> str:
    """The wheels into ``~/wheels`` of the user's home (their own files, as if they had downloaded them)."""
    wheels = {f"wheels/{filename}": data for filename, data in map(make_wheel, names)}
    put_files(container, f"/home/{login}", wheels, owner=1000)
    return f"/home/{login}/wheels"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("envkeys"), "env")


def _server(hub, user, keys):
    hub.save_ssh_keys(user, keys[1])
    hub.spawn(user)
    return hub.container(user), hub.token(user), hub.server_state(user)["ssh_port"]


def test_pip_install_in_a_notebook_lands_in_the_home_and_survives_a_restart(hub, keys):
    container, token, _ = _server(hub, "pia", keys)
    wheels = put_wheels(container, "pia", "devdock_pkg_a")
    url = hub.server_url("pia")
    result = run_in_kernel(url, token, f"%pip install --no-index --find-links {wheels} devdock_pkg_a")
    assert result["status"] == "ok", result
    assert "Successfully installed devdock_pkg_a-1.0" in result["stdout"], result
    where = run_in_kernel(url, token, "import devdock_pkg_a, jupyterlab; print(devdock_pkg_a.__file__)")
    assert where["status"] == "ok" and where["stdout"].startswith("/home/pia/.local/lib/python3"), where
    hub.stop_server("pia")
    hub.spawn("pia")  # a new container from the image: the package lives in the home
    again = run_in_kernel(
        url, token, "import devdock_pkg_a, jupyterlab; print(devdock_pkg_a.VALUE, jupyterlab.__version__)"
    )
    assert again["status"] == "ok" and again["stdout"].split()[0] == "devdock_pkg_a", again
    # Its command is on PATH, for the terminal as for SSH.
    out = run_in_terminal(url, token, "devdock_pkg_a-hello", expect="hello from devdock_pkg_a")
    assert "hello from devdock_pkg_a" in out
    hub.stop_server("pia")


def test_a_package_installed_over_ssh_imports_in_a_notebook_and_the_reverse(hub, keys):
    container, token, port = _server(hub, "sve", keys)
    wheels = put_wheels(container, "sve", "devdock_pkg_b", "devdock_pkg_c")
    installed = ssh(port, "sve", keys[0], f"pip install --no-index --find-links {wheels} devdock_pkg_b", timeout=120)
    assert installed.returncode == 0 and "Successfully installed" in installed.stdout, installed.stderr
    seen = run_in_kernel(hub.server_url("sve"), token, "import devdock_pkg_b; print(devdock_pkg_b.VALUE)")
    assert seen["status"] == "ok" and seen["stdout"].strip() == "devdock_pkg_b", seen
    result = run_in_kernel(hub.server_url("sve"), token, f"%pip install --no-index --find-links {wheels} devdock_pkg_c")
    assert result["status"] == "ok", result
    back = ssh(port, "sve", keys[0], "python -c 'import devdock_pkg_c; print(devdock_pkg_c.VALUE)'")
    assert back.returncode == 0 and back.stdout.strip() == "devdock_pkg_c", back.stderr
    hub.stop_server("sve")


def _env(text: str, names: list[str]) -> dict:
    """``NAME=value`` lines of ``names`` in a command's output (a terminal's too: its prompt and echo are skipped)."""
    found = {}
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # the terminal's control sequences
    for line in text.replace("\r", "\n").splitlines():
        name, sep, value = line.partition("=")
        if sep and name in names:
            found[name] = value
    return found


@pytest.fixture(scope="module")
def prestart_hub(make_hub):
    """A hub with the shipped ``desktop_prestart``: the desktop session runs before anyone opens it (the harness's
    hubs start it when it is first opened)."""
    return make_hub("prestart", desktop_prestart=True)


def test_ssh_finds_python_pip_and_jupyter_with_the_same_environment_as_terminals_notebooks_and_the_desktop(
    prestart_hub, keys
):
    hub = prestart_hub
    container, token, port = _server(hub, "eve2", keys)
    found = ssh(port, "eve2", keys[0], "command -v python pip jupyter")
    assert found.returncode == 0 and len(found.stdout.split()) == 3, found
    names = ["PATH", "HOME", "LANG", "NVIDIA_VISIBLE_DEVICES", "USER"]
    script = " ; ".join(f'echo "{n}=${n}"' for n in names)
    over_ssh = _env(ssh(port, "eve2", keys[0], script).stdout, names)  # `ssh host cmd`, as VS Code runs commands
    login = _env(ssh(port, "eve2", keys[0], f"bash -lc '{script}'", "-tt").stdout, names)  # an interactive session
    typed = run_in_terminal(hub.server_url("eve2"), token, script + " ; echo EN''D", expect="END\r\n")
    terminal = _env(typed, names)
    # A notebook's kernel, and a terminal on the desktop (an interactive shell in the desktop session's environment,
    # as xfce4-terminal starts it).
    code = "import os\n" + "".join(f"print('{n}=' + os.environ.get('{n}', ''))\n" for n in names)
    kernel = _env(run_in_kernel(hub.server_url("eve2"), token, code)["stdout"], names)
    desktop_shell = (
        "import subprocess, time\n"
        "for _ in range(180):  # the desktop starts with the server, a moment after it (later on a loaded machine)\n"
        "    pid = subprocess.run(['pgrep', '-o', '-u', '1000', 'xfce4-session'], capture_output=True).stdout\n"
        "    if pid.strip():\n"
        "        break\n"
        "    time.sleep(1)\n"
        "raw = open(f'/proc/{pid.decode().strip()}/environ', 'rb').read().split(b'\\0')\n"
        "env = dict(e.decode().split('=', 1) for e in raw if b'=' in e)\n"
        f"subprocess.run(['bash', '-ic', {script!r}], env=env, stderr=subprocess.DEVNULL)\n"
    )
    desktop = _env(container.exec_run(["/usr/bin/python3", "-c", desktop_shell], user="1000").output.decode(), names)
    assert len(over_ssh) == len(names), over_ssh
    for name in names:
        views = (over_ssh, login, terminal, kernel, desktop)
        assert len({v.get(name) for v in views}) == 1, (name, over_ssh, login, terminal, kernel, desktop)
    assert over_ssh["PATH"].split(":")[0] == "/home/eve2/.local/bin"
    hub.stop_server("eve2")


def test_a_venv_in_the_home_registered_as_a_kernel_is_listed_after_a_restart_and_runs(hub, keys):
    container, token, port = _server(hub, "vin", keys)
    wheels = put_wheels(container, "vin", "devdock_pkg_v")
    made = ssh(
        port, "vin", keys[0], f"devdock-venv analysis --no-index --find-links {wheels} devdock_pkg_v", timeout=180
    )
    assert made.returncode == 0, made.stdout + made.stderr
    hub.stop_server("vin")
    hub.spawn("vin")
    specs = requests.get(hub.server_url("vin") + "api/kernelspecs", headers={"Authorization": f"token {token}"}).json()
    assert "analysis" in specs["kernelspecs"] and "python3" in specs["kernelspecs"]
    code = "import sys, devdock_pkg_v, jupyterlab; print(sys.prefix)"
    ran = run_in_kernel(hub.server_url("vin"), token, code, kernel="analysis")
    assert ran["status"] == "ok" and ran["stdout"].strip() == "/home/vin/envs/analysis", ran
    outside = run_in_kernel(hub.server_url("vin"), token, "import devdock_pkg_v")  # only in the venv
    assert outside["status"] == "error" and "ModuleNotFoundError" in outside["error"], outside
    hub.stop_server("vin")


def test_a_server_whose_user_broke_their_packages_still_starts_and_says_so(hub, keys):
    """Something in ~/.local that breaks every Python at start (a broken .pth file): the server starts again
    without the user's packages, says so, and the user can repair it; the next start is normal again."""
    container, token, port = _server(hub, "brk", keys)
    broke = ssh(
        port,
        "brk",
        keys[0],
        "d=$(python -m site --user-site); mkdir -p $d; echo 'import sys; sys.exit(3)' > $d/zz-broken.pth",
    )
    assert broke.returncode == 0, broke.stderr
    shell = ssh(port, "brk", keys[0], "python -c 'print(1)'")
    assert shell.returncode != 0 and "site" in shell.stderr  # positive control: every Python of the user is broken
    hub.stop_server("brk")
    hub.spawn("brk")
    headers = {"Authorization": f"token {token}"}
    assert requests.get(hub.server_url("brk") + "api/status", headers=headers).status_code == 200
    status = requests.get(hub.server_url("brk") + "api/devdock/status", headers=headers).json()
    assert "could not start with your own Python packages" in status["notice"], status
    assert "starting it without them" in hub.container("brk").logs().decode()
    fixed = ssh(
        port := hub.server_state("brk")["ssh_port"],
        "brk",
        keys[0],
        "rm ~/.local/lib/python3*/site-packages/zz-broken.pth",
    )
    assert fixed.returncode == 0
    hub.stop_server("brk")
    hub.spawn("brk")
    assert "notice" not in requests.get(hub.server_url("brk") + "api/devdock/status", headers=headers).json()
    hub.stop_server("brk")


@pytest.fixture(scope="module")
def derived_hub(docker_client, make_hub):
    """A site's own image: FROM devdock's, one more Debian package, chosen by a profile."""
    tag = f"devdock/desktop:with-sl-{RUN_ID}"
    install = "apt-get update && apt-get install -y --no-install-recommends sl && rm -rf /var/lib/apt/lists/*"
    dockerfile = f"FROM {IMAGE}\nRUN {install}\n"
    built = subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"}, timeout=900,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    profiles = [
        {"slug": "desktop", "display_name": "Desktop", "default": True},
        {"slug": "trains", "display_name": "With sl", "overrides": {"image": tag}},
    ]
    h = make_hub("derived", extra_config=f"c.DevDockSpawner.profile_list = {profiles!r}")
    yield h, tag
    h.stop()
    docker_client.images.remove(tag, force=True)


def test_a_derived_image_with_an_extra_debian_package_builds_and_spawns_through_a_profile(derived_hub):
    hub, tag = derived_hub
    hub.spawn("tia", options={"profile": "trains"})
    container = hub.container("tia")
    assert container.image.tags == [tag]
    out = container.exec_run(["sh", "-c", "test -x /usr/games/sl && echo has-sl; id -un"], user="1000")
    assert out.output.decode().split() == ["has-sl", "tia"]
    # Users still cannot install system packages themselves: no root.
    apt = container.exec_run(["sh", "-c", "apt-get install -y cowsay 2>&1 | tail -1"], user="1000").output.decode()
    assert "Permission denied" in apt or "are you root" in apt, apt
    hub.stop_server("tia")

"""What the setup scripts and the compose file put on a fresh host, read from the files themselves (no engine).

The checks that need an engine (a build with no copied certificates, the uninstaller) are in
tests/integration/test_host_setup.py.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.harness import ROOT

SCRIPTS = ROOT / "scripts"
PROXY_IMAGE = ROOT / "images" / "proxy"


def _chp_pins(text: str) -> set[str]:
    """Every ``configurable-http-proxy@<version>`` a script installs, with ``$CHP_VERSION`` resolved."""
    versions = set(re.findall(r"configurable-http-proxy@([^\s\"']+)", text))
    variable = re.search(r"^CHP_VERSION=(\S+)$", text, re.MULTILINE)
    if variable:
        versions = {variable.group(1) if v == "$CHP_VERSION" else v for v in versions}
    return versions


def test_the_scripts_install_the_configurable_http_proxy_of_the_proxy_image_an_exact_version():
    image = json.loads((PROXY_IMAGE / "package.json").read_text())["dependencies"]["configurable-http-proxy"]
    lock = json.loads((PROXY_IMAGE / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/configurable-http-proxy"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", image), f"images/proxy/package.json pins a range ({image}), not a version"
    assert locked == image
    for script in ("up.sh", "test.sh"):
        assert _chp_pins((SCRIPTS / script).read_text()) == {image}, f"scripts/{script} installs another version"


@pytest.mark.parametrize("version", ["5", "^5.1.0", "latest"])
def test_a_range_in_a_script_is_found_as_a_different_pin(version):
    # The check above compares exact strings: a range is never mistaken for the image's version.
    assert _chp_pins(f"npm install -g configurable-http-proxy@{version} >/dev/null") != {"5.1.0"}


def test_test_sh_installs_python_s_venv_module_and_the_tools_the_tests_run():
    text = (SCRIPTS / "test.sh").read_text()
    for package in ("python3-venv", "git", "procps", "openssh-client", "rsync", "util-linux", "caddy", "chromium"):
        assert re.search(rf"need_apt\+=\([^)]*\b{re.escape(package)}\b", text), f"test.sh never installs {package}"


def _compose_builds() -> dict[str, dict]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {name: s["build"] for name, s in services.items() if "build" in s}


HOST_CA = "${DEVDOCK_HOST_CA_DIR:-/usr/local/share/ca-certificates}"


def _build_sections() -> list[tuple[str, dict]]:
    """Every build section of the compose file and of its GPU override, as written (anchors resolved)."""
    sections = [(f"docker-compose.yml:{name}", build) for name, build in _compose_builds().items()]
    gpu = yaml.safe_load((ROOT / "examples/compose-override/gpu.yml").read_text())["services"]
    sections += [(f"gpu.yml:{name}", s["build"]) for name, s in gpu.items() if "build" in s]
    return sections


@pytest.mark.parametrize(("where", "build"), _build_sections(), ids=[s[0] for s in _build_sections()])
def test_every_compose_build_gets_the_host_s_ca_folder_as_the_host_ca_context(where, build):
    assert build.get("additional_contexts", {}).get("host-ca") == HOST_CA, where
    context = ROOT / build["context"]
    dockerfile = (context / build["dockerfile"]).read_text()
    # The Dockerfile takes it from that named context (an empty stage of that name when none is given) ...
    assert re.search(r"^FROM scratch AS host-ca$", dockerfile, re.MULTILINE), where
    assert re.search(r"^COPY --from=host-ca / /opt/devdock/build/certs/host-ca/$", dockerfile, re.MULTILINE), where
    # ... into the folder its CA step installs from, before the first package download.
    copy = dockerfile.index("COPY --from=host-ca")
    assert copy < dockerfile.index("EXTRA_CA_DIR=/opt/devdock/build/certs"), where


def test_build_images_sh_passes_the_same_host_ca_context_to_every_build():
    text = (SCRIPTS / "build-images.sh").read_text()
    builds = re.findall(r"docker build [^\n]*(?:\\\n[^\n]*)*", text)
    assert builds and all('--build-context "host-ca=$(host_ca_dir)"' in b for b in builds), builds
    assert "${DEVDOCK_HOST_CA_DIR:-/usr/local/share/ca-certificates}" in text
    assert "images/certs/" not in re.sub(r"#.*", "", text)  # nothing is copied into the checkout any more


def test_the_defaults_table_is_generated_from_the_files_that_set_the_defaults():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(ROOT / "docs/generate_defaults.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def _defaults():
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_defaults", ROOT / "docs/generate_defaults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.config_defaults(ROOT / "jupyterhub_config.py")
    return module, config, module.up_sh_defaults(SCRIPTS / "up.sh"), module.compose_hub(ROOT / "docker-compose.yml")


def test_the_guides_say_the_shipped_ssh_mode_and_home_size():
    module, config, up, compose = _defaults()
    shipped_mode = up["DEVDOCK_SSH_MODE"]
    assert shipped_mode == compose["DEVDOCK_SSH_MODE"]
    own_mode = module.trait_default("DevDockSpawner.ssh_mode").strip("'")
    row = next(
        line for line in (ROOT / "docs/ssh.md").read_text().splitlines() if "`c.DevDockSpawner.ssh_mode`" in line
    )
    assert f"`{shipped_mode}` with `scripts/up.sh` and compose" in row and f"`{own_mode}` in a hub" in row, row
    home = config["DEVDOCK_HOME_SIZE"]["default"]
    assert compose["DEVDOCK_HOME_SIZE"] == "passed when set" and "DEVDOCK_HOME_SIZE" not in up
    row = next(line for line in (ROOT / "docs/sharing.md").read_text().splitlines() if line.startswith("| homes |"))
    assert f"`{home}` with devdock's `jupyterhub_config.py`" in row, row
    assert module.trait_default("DevDockSpawner.home_size") == "''" and "none in a hub configuration" in row


def test_readme_ssh_md_and_sharing_md_say_an_open_ssh_session_counts_as_use():
    # The image's activity report counts every live sshd session (devdock_ext.ssh_sessions); the docs say the same.
    ext = (ROOT / "images/desktop/rootfs/opt/devdock/lib/devdock_ext/__init__.py").read_text()
    assert 'if ssh_sessions():\n            self.record("devdock-ssh", _now())' in ext
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "an open SSH session counts as use while it lasts" in readme
    assert "SSH session that nobody touches is idle" not in readme
    assert "An open SSH session counts as activity" in (ROOT / "docs/ssh.md").read_text()
    assert "for as long as they are open, typed in or not" in " ".join((ROOT / "docs/sharing.md").read_text().split())


def test_compose_passes_every_variable_of_the_hub_s_ssh_gateway_settings():
    _, config, _, compose = _defaults()
    for name in config:
        if name.startswith("DEVDOCK_SSH_GATEWAY_") and name not in ("DEVDOCK_SSH_GATEWAY_TOKEN",):
            if name == "DEVDOCK_SSH_GATEWAY_HOST_KEY":
                continue  # the hub image's entrypoint (images/hub/devdock-hub) reads it from the gateway's volume
            assert compose.get(name, "not passed") != "not passed", name


def test_the_systemd_unit_runs_up_sh_after_docker_and_stops_the_hub_the_way_that_keeps_servers():
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((ROOT / "examples/systemd/devdock.service").read_text())
    assert unit["Unit"]["Requires"] == "docker.service" and "docker.service" in unit["Unit"]["After"]
    service = unit["Service"]
    checkout = service["WorkingDirectory"]
    assert service["ExecStart"] == f"{checkout}/scripts/up.sh"
    # up.sh ends in `exec jupyterhub`: the hub is the unit's main process, and SIGINT is its clean shutdown.
    assert (SCRIPTS / "up.sh").read_text().rstrip().splitlines()[-1].startswith("exec .venv/bin/jupyterhub")
    assert service["KillSignal"] == "SIGINT" and service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("-")  # optional settings file
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # Users' servers outlive a hub stop only with cleanup_servers off, which the config up.sh runs sets by default.
    assert 'env_flag("DEVDOCK_CLEANUP_SERVERS", False)' in (ROOT / "jupyterhub_config.py").read_text()


def test_every_long_running_compose_service_restarts_with_docker():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        expected = "no" if name == "desktop-image" else "unless-stopped"
        assert service["restart"] == expected, name


def _fake_docker(folder, cdi_dirs: int):
    """A `docker` client stand-in for engine.sh: an engine that answers, with or without CDI."""
    script = folder / "docker"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "info --format {{len .CDISpecDirs}}") echo ' + str(cdi_dirs) + " ;;\n"
        "  info) exit 0 ;;\n"
        '  "version --format {{.Server.Version}}") echo 26.1.5 ;;\n'
        '  "version --format {{.Server.APIVersion}}") echo 1.45 ;;\n'
        '  "compose version") exit 0 ;;\n'
        '  "compose version --short") echo 2.26.1 ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)


@pytest.mark.parametrize(("cdi_dirs", "warned"), [(0, True), (2, False)], ids=["cdi-off", "cdi-on"])
def test_engine_sh_tells_the_admin_when_a_running_engine_lacks_cdi_and_never_restarts_it(tmp_path, cdi_dirs, warned):
    import os
    import subprocess

    _fake_docker(tmp_path, cdi_dirs)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(SCRIPTS / "engine.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "engine already running" in result.stderr
    assert ("CDI is off on this engine" in result.stderr) is warned, result.stderr
    assert "systemctl restart docker" in result.stderr or not warned
    assert "starting" not in result.stderr  # a running engine is left as it is

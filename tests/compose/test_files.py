"""The compose file, its override examples and the profile files, read by the real tools that read them
(the installed compose, devdock's profile loader). No engine needed."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from devdock_spawner.profiles import load_profiles
from tests.compose.stack import COMPOSE_FILE, compose_command
from tests.harness import ROOT

EXAMPLES = ROOT / "examples" / "compose-override"


@pytest.fixture
def compose_config(tmp_path):
    """``compose -f docker-compose.yml [args]`` with an env file: never the developer's .env."""
    empty = tmp_path / "empty.env"
    empty.write_text("")

    def run(*args: str, env_file=None, extra_env=None) -> subprocess.CompletedProcess:
        command = [*compose_command(), "-p", "devdock-files", "-f", str(COMPOSE_FILE)]
        command += ["--env-file", str(env_file or empty), *args]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **(extra_env or {})}
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)

    return run


def test_compose_file_is_valid_and_has_the_five_services_with_the_ssh_gateway(compose_config):
    result = compose_config("config", "--services")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["desktop-image", "hub", "oidc", "proxy", "ssh-gateway"]


OVERRIDES = [
    ("no-demo-idp", {}),
    ("tls-caddy", {"DEVDOCK_DOMAIN": "devdock.example.org"}),
    ("tls-proxy", {"DEVDOCK_TLS_DIR": "/etc/devdock/tls", "DEVDOCK_PUBLIC_URL": "https://devdock.example.org"}),
    ("gpu", {}),
]


@pytest.mark.parametrize(("name", "env"), OVERRIDES, ids=[o[0] for o in OVERRIDES])
def test_override_examples_merge(compose_config, name, env):
    result = compose_config("-f", str(EXAMPLES / f"{name}.yml"), "config", extra_env=env)
    assert result.returncode == 0, result.stderr


def test_with_tls_on_the_proxy_the_ssh_gateway_asks_the_hub_over_https_at_the_public_url(compose_config):
    env = {
        "DEVDOCK_TLS_DIR": "/etc/devdock/tls",
        "DEVDOCK_HTTP_PORT": "443",
        "DEVDOCK_PUBLIC_URL": "https://devdock.example.org",
    }

    def hub_api(*files: str) -> str:
        result = compose_config(*(a for f in files for a in ("-f", str(EXAMPLES / f))), "config", extra_env=env)
        assert result.returncode == 0, result.stderr
        return yaml.safe_load(result.stdout)["services"]["ssh-gateway"]["environment"]["DEVDOCK_SSH_GATEWAY_HUB_API"]

    # Without the fix the gateway would speak plain HTTP to the port where the proxy now speaks TLS.
    assert hub_api() == "http://127.0.0.1:443/hub/api"
    assert hub_api("tls-proxy.yml") == "https://devdock.example.org/hub/api"
    # Caddy in front leaves the proxy's own port plain HTTP on loopback: the default stays right there.
    caddy = compose_config(
        "-f", str(EXAMPLES / "tls-caddy.yml"), "config", extra_env={"DEVDOCK_DOMAIN": "d.example.org"}
    )
    gateway = yaml.safe_load(caddy.stdout)["services"]["ssh-gateway"]["environment"]
    assert gateway["DEVDOCK_SSH_GATEWAY_HUB_API"] == "http://127.0.0.1:8000/hub/api"


def test_on_a_gpu_host_the_hub_may_read_the_kernel_log_where_dmesg_is_restricted(compose_config):
    result = compose_config("-f", str(EXAMPLES / "gpu.yml"), "config")
    hub = yaml.safe_load(result.stdout)["services"]["hub"]
    assert "/dev/kmsg" in " ".join(str(d) for d in hub["devices"])
    assert "SYSLOG" in hub["cap_add"]


def test_without_the_demo_idp_the_oidc_service_is_not_started(compose_config):
    result = compose_config("-f", str(EXAMPLES / "no-demo-idp.yml"), "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    # A service in a profile nobody activates is neither built nor started by `up`: Compose v2 leaves it out.
    assert "oidc" not in services
    assert sorted(services) == ["desktop-image", "hub", "proxy", "ssh-gateway"]
    assert all("profiles" not in services[name] for name in services)
    assert "oidc" not in services["hub"].get("depends_on", {})
    # Positive control: the profile is what hides it.
    shown = compose_config("-f", str(EXAMPLES / "no-demo-idp.yml"), "--profile", "demo-idp", "config")
    assert yaml.safe_load(shown.stdout)["services"]["oidc"]["profiles"] == ["demo-idp"]


@pytest.mark.parametrize("idp", sorted(p.stem for p in (EXAMPLES / "idp").glob("*.env")))
def test_identity_provider_examples_reach_the_hub(compose_config, idp):
    result = compose_config("config", env_file=EXAMPLES / "idp" / f"{idp}.env")
    assert result.returncode == 0, result.stderr
    hub = yaml.safe_load(result.stdout)["services"]["hub"]["environment"]
    assert hub["DEVDOCK_AUTHENTICATOR"] == "oauth"
    assert hub["OAUTH2_AUTHORIZE_URL"].startswith("https://")
    assert hub["OAUTH_CLIENT_SECRET"] == "replace-with-the-client-secret"


@pytest.mark.parametrize(
    "path",
    [ROOT / "images" / "hub" / "profiles.json", ROOT / "examples/site-folder/profiles-gpu.json"],
    ids=["demo", "gpu"],
)
def test_profile_files_load(path):
    profiles = load_profiles(json.loads(path.read_text())["profiles"])
    assert sum(p.default for p in profiles) == 1
    assert any(p.allowed_groups for p in profiles)  # each shows groups from the IdP limiting a profile

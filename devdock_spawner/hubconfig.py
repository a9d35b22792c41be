"""What devdock's ``jupyterhub_config.py`` decides, as tested functions, so that the file stays a list of settings.

Each function reads the environment (the ``DEVDOCK_*`` and oauthenticator's variables a site sets in ``.env``
or its service manager) and either returns a value or stops the hub with :class:`ConfigError`, a sentence
that names the variable: a configuration that cannot be honoured never starts a hub on defaults.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import docker

from . import culler
from .container import network_spec
from .profiles import load_profiles


class ConfigError(SystemExit):
    """A setting that cannot be honoured: the hub stops with this sentence."""

    def __init__(self, message: str):
        super().__init__(f"devdock: {message}")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def env_flag(name: str, default: bool) -> bool:
    value = env(name, "1" if default else "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{name} must be 1 or 0, not {value!r}")
    return value in ("1", "true", "yes")


def env_int(name: str, default: int) -> int:
    value = env(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None


def parse_labels(pairs: list[str], name: str = "DEVDOCK_EXTRA_LABELS") -> dict[str, str]:
    """``["key=value", ...]`` as a dict; an entry without ``=`` is refused."""
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name} entry {pair!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def parse_port_range(text: str, name: str = "DEVDOCK_SSH_PORTS") -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise ConfigError(f"{name} must be a port range like 42000-42999, not {text!r}") from None


def network_gateway(network: str, isolated: bool) -> str:
    """The gateway address of the users' network (created if missing): where a hub on this host is reachable."""

    client = docker.from_env()
    try:
        info = client.api.inspect_network(network)
    except docker.errors.NotFound:
        client.api.create_network(**network_spec(network, isolated=isolated))
        info = client.api.inspect_network(network)
    for config in info.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return config["Gateway"]
    raise ConfigError(f"network {network} has no gateway address; set DEVDOCK_HUB_IP")


# --- one origin per user ----------------------------------------------------------------------------------------

#: What a hub that serves every user's server on its own origin answers when a site opts out.
SINGLE_ORIGIN_WARNING = (
    "every user's server shares the hub's origin (DEVDOCK_SINGLE_ORIGIN=1 / "
    "c.DevDockSpawner.allow_single_origin = True): a page served by one user's server can act for whoever "
    "opens it (change their SSH keys, read their pages); see docs/security.md"
)


def user_origins(public_url: str, subdomain_host: str = "", single_origin: bool = False) -> tuple[str, str]:
    """``(subdomain_host, public_url)`` for a hub whose users' servers each have their own origin.

    ``public_url`` is the URL users open (``DEVDOCK_PUBLIC_URL``, else ``DEVDOCK_BIND_URL``); ``subdomain_host``
    a site's own wildcard host (``DEVDOCK_SUBDOMAIN_HOST``). Without one, it is derived: a loopback address
    becomes ``localhost`` (browsers resolve ``alice.localhost`` to this machine by themselves, so local use needs
    no DNS), a host name stays (``alice.hub.example.org`` then needs a wildcard DNS record and certificate). Any
    other address (``0.0.0.0`` included: users then come by some address of this host) has no subdomains: the hub
    stops with a sentence. ``single_origin`` (the documented, unsafe opt-out) keeps every server on the hub's
    origin.

    >>> user_origins("http://127.0.0.1:8000")
    ('http://localhost:8000', 'http://localhost:8000')
    >>> user_origins("https://hub.example.org/")
    ('https://hub.example.org', 'https://hub.example.org/')
    """
    if single_origin:
        return "", public_url
    if subdomain_host:
        _check_origin_url(subdomain_host, "DEVDOCK_SUBDOMAIN_HOST")
        return subdomain_host.rstrip("/"), public_url
    parts = _check_origin_url(public_url, "DEVDOCK_PUBLIC_URL (or DEVDOCK_BIND_URL)")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        address = None
    if address is not None and not address.is_loopback:
        raise ConfigError(
            f"{public_url} is an address, and an address has no subdomains for users' servers: set "
            "DEVDOCK_SUBDOMAIN_HOST to a host name with a wildcard DNS record (https://hub.example.org, users at "
            "alice.hub.example.org), or DEVDOCK_SINGLE_ORIGIN=1 to serve every user on the hub's origin (unsafe: "
            "docs/security.md)"
        )
    if address is None:
        return f"{parts.scheme}://{parts.netloc}", public_url
    port = f":{parts.port}" if parts.port else ""
    origin = f"{parts.scheme}://localhost{port}"
    return origin, origin


def _check_origin_url(url: str, name: str):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
        raise ConfigError(f"{name} must be a URL like https://hub.example.org (no path), not {url!r}")
    return parts


# --- the site folder ---------------------------------------------------------------------------------------------


def site_files(site_dir: str) -> dict[str, Path | None]:
    """The site's own files: ``{"profiles": path or None, "config": path or None}``.

    They live outside the git checkout (``DEVDOCK_SITE_DIR``, default ``/etc/devdock``), so that pulling a new
    devdock never conflicts with a site's edits: ``profiles.json`` (the spawn form's profiles) and
    ``site_config.py`` (anything JupyterHub, DockerSpawner or DevDockSpawner can be told, loaded last).
    ``DEVDOCK_PROFILES_FILE`` and ``DEVDOCK_SITE_CONFIG`` name other files; a file that is named but missing
    stops the hub (a site that configured one never silently runs without it).
    """
    folder = Path(site_dir) if site_dir else None
    found: dict[str, Path | None] = {}
    for key, variable, default in (
        ("profiles", "DEVDOCK_PROFILES_FILE", "profiles.json"),
        ("config", "DEVDOCK_SITE_CONFIG", "site_config.py"),
    ):
        named = env(variable)
        if named:
            path = Path(named)
            if not path.is_file():
                raise ConfigError(f"{variable}={named} does not exist (or is not a file)")
            found[key] = path
        elif folder is not None and (folder / default).is_file():
            found[key] = folder / default
        else:
            found[key] = None
    return found


def read_profiles(path: Path) -> list[dict]:
    """``{"profiles": [...]}`` from a JSON file, in the format of ``c.DevDockSpawner.profile_list``."""
    try:
        profiles = json.loads(path.read_text())["profiles"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read the profiles of {path}: {e!r}") from None
    if not isinstance(profiles, list):
        raise ConfigError(f"{path}: 'profiles' must be a list")
    return profiles


# --- who may sign in ---------------------------------------------------------------------------------------------


def admin_users(authenticator: str) -> set[str]:
    """``DEVDOCK_ADMIN_USERS``; by default ``admin`` for the dummy trial setup and nobody with single sign-on.

    An identity-provider account that happens to be called "admin" must not become hub admin unless the site
    said so: with oauth, admins come from ``DEVDOCK_OAUTH_ADMIN_GROUPS`` or ``DEVDOCK_ADMIN_USERS``.
    """
    return set(env_list("DEVDOCK_ADMIN_USERS", "admin" if authenticator == "dummy" else ""))


def verified_email(userdata: dict):
    """The e-mail address as username, only when the provider vouches for it (cf. CVE-2026-33175)."""
    return userdata.get("email") if userdata.get("email_verified") is True else None


def configure_oauth(c, allowed_users: set[str]) -> None:
    """GenericOAuthenticator for any OAuth 2 / OpenID Connect provider, from oauthenticator's own variables.

    The user's claims come from the userinfo endpoint, or from the ID token the token endpoint returned
    (providers whose userinfo lacks the username or groups, such as Microsoft Entra ID).
    """
    from_id_token = env_flag("DEVDOCK_OAUTH_USERDATA_FROM_ID_TOKEN", False)
    endpoints = ("OAUTH2_AUTHORIZE_URL", "OAUTH2_TOKEN_URL") + (() if from_id_token else ("OAUTH2_USERDATA_URL",))
    missing = [name for name in (*endpoints, "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET") if not env(name)]
    if missing:
        raise ConfigError(f"DEVDOCK_AUTHENTICATOR=oauth needs {', '.join(missing)} (see docs/deployment.md)")
    c.JupyterHub.authenticator_class = "generic-oauth"
    oauth = c.GenericOAuthenticator
    oauth.userdata_from_id_token = from_id_token
    oauth.login_service = env("DEVDOCK_OAUTH_LOGIN_SERVICE", "single sign-on")
    oauth.auto_login = env_flag("DEVDOCK_OAUTH_AUTO_LOGIN", True)
    oauth.scope = env("DEVDOCK_OAUTH_SCOPE", "openid profile email").split()
    username_claim = env("DEVDOCK_OAUTH_USERNAME_CLAIM", "preferred_username")
    # An address becomes a username only when the provider vouches for it: an unverified one could name somebody
    # else's account. Sign-in then fails with "No ... found".
    oauth.username_claim = verified_email if username_claim == "email" else username_claim
    # The URL users open, as jupyterhub_config.py settled it (127.0.0.1 becomes localhost: users' servers are on
    # its subdomains, and the callback must reach the origin that set the login's state cookie).
    public_url = c.JupyterHub.public_url if "public_url" in c.JupyterHub else env("DEVDOCK_PUBLIC_URL")
    if public_url and not env("OAUTH_CALLBACK_URL"):
        oauth.oauth_callback_url = public_url.rstrip("/") + "/hub/oauth_callback"
    # Groups from the identity provider's claim become JupyterHub groups (profiles' allowed_groups use them).
    allowed_groups = set(env_list("DEVDOCK_OAUTH_ALLOWED_GROUPS"))
    admin_groups = set(env_list("DEVDOCK_OAUTH_ADMIN_GROUPS"))
    groups_claim = env("DEVDOCK_OAUTH_GROUPS_CLAIM", "groups" if allowed_groups or admin_groups else "")
    if groups_claim:
        oauth.manage_groups = True  # before the group settings, which require it
        oauth.auth_state_groups_key = "oauth_user." + groups_claim
        oauth.allowed_groups = allowed_groups
        oauth.admin_groups = admin_groups
    # Everyone the provider knows (for GitHub or Google: everyone) only when asked for in so many words.
    allow_all = env_flag("DEVDOCK_OAUTH_ALLOW_ALL", False)
    oauth.allow_all = allow_all  # also undoes Authenticator.allow_all: allowed users and groups restrict
    if not (allow_all or allowed_users or allowed_groups):
        raise ConfigError(
            "with DEVDOCK_AUTHENTICATOR=oauth, say who may log in: DEVDOCK_ALLOWED_USERS, "
            "DEVDOCK_OAUTH_ALLOWED_GROUPS, or DEVDOCK_OAUTH_ALLOW_ALL=1 for everyone the provider accepts"
        )
    oauth.custom_403_message = env(
        "DEVDOCK_OAUTH_DENIED_MESSAGE",
        "Your account is not allowed on this devdock server. Ask its administrators for access.",
    )


# --- idle culling ------------------------------------------------------------------------------------------------


def _configured(c, name: str, default):
    """A DevDockSpawner (or DevDockSwarmSpawner) setting as the configuration has it, else ``default``."""
    for section in ("DevDockSwarmSpawner", "DevDockSpawner"):
        if section in c and name in c[section]:
            return c[section][name]
    return default


def configured_profiles(c) -> list:
    """The profiles of a hub's final configuration (``profile_list``)."""
    return load_profiles(_configured(c, "profile_list", []))


def culling_policy(c):
    """The culling policy of a hub's configuration: its profiles and ``cull_*`` settings, as they end up after
    every configuration file was loaded (the hub hands it to the culler: ``/hub/api/devdock/cull-policy``)."""

    return culler.policy_for(
        configured_profiles(c),
        idle_timeout=_configured(c, "cull_idle_timeout", culler.IDLE_TIMEOUT),
        gpu_idle_timeout=_configured(c, "cull_gpu_idle_timeout", culler.GPU_IDLE_TIMEOUT),
        gpu_max_age=_configured(c, "cull_gpu_max_age", culler.GPU_MAX_AGE),
        max_age=_configured(c, "cull_max_age", 0),
        contention_idle_timeout=_configured(c, "cull_gpu_contention_idle_timeout", culler.GPU_CONTENTION_IDLE_TIMEOUT),
    )


def configure_culling(c) -> None:
    """jupyterhub-idle-culler as the hub-managed service ``devdock-culler`` (on unless ``DEVDOCK_CULL=0``).

    The culler asks the hub for the policy at run time, so that profiles a site sets in a file loaded after this
    one (a site_config.py, a config that loads devdock's first) are the ones it applies.
    """

    if not env_flag("DEVDOCK_CULL", True):
        return
    service, role = culler.culler_service(
        env_int("DEVDOCK_CULL_TIMEOUT", culler.IDLE_TIMEOUT),
        cull_every=env_int("DEVDOCK_CULL_EVERY", culler.CULL_EVERY),
    )
    c.JupyterHub.services = [*(c.JupyterHub.services if "services" in c.JupyterHub else []), service]
    c.JupyterHub.load_roles = [*(c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else []), role]

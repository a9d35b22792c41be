"""Which of devdock's guarantees a hub's configuration lacks, and the line that adds each (pure).

devdock's own ``jupyterhub_config.py`` sets everything below. A site that writes its own hub configuration with
only ``c.JupyterHub.spawner_class = "devdock"`` gets a working spawner but not the rest, and nothing would tell
it: an untouched open desktop counts as active for ever (configurable-http-proxy counts noVNC's traffic), homes
grow without bound, idle servers are never stopped. The hub says so instead, once in its log when it makes its
first devdock server and on the admin page (``/hub/devdock/admin``) every time, each with the line to add.
"""

from __future__ import annotations

from typing import NamedTuple

from traitlets.config import Config

#: The hub-managed service that runs jupyterhub-idle-culler (devdock_spawner.culler.culler_service).
CULLER_SERVICE = "devdock-culler"
#: The names ``c.JupyterHub.proxy_class`` may give devdock's proxy (its entry point, its import path).
DEVDOCK_PROXY_NAMES = {"devdock", "devdock_spawner.proxy.DevDockProxy", "devdock_spawner.DevDockProxy"}


class Gap(NamedTuple):
    """A guarantee the configuration lacks, and the configuration line that adds it."""

    guarantee: str
    line: str


def _is_devdock_proxy(value) -> bool:
    if isinstance(value, str):
        return value in DEVDOCK_PROXY_NAMES or value.lower() == "devdock"
    from .proxy import DevDockProxy  # a class given directly (jupyterhub imports the package already)

    return isinstance(value, type) and issubclass(value, DevDockProxy)


def _has_devdock_pages(handlers) -> bool:
    return any(isinstance(h, (tuple, list)) and h and h[0] == r"/devdock/admin" for h in handlers or [])


def _set(config: Config, name: str) -> bool:
    """Whether the site set this spawner setting at all (DevDockSpawner's, DockerSpawner's or Spawner's section):
    a value it chose (``home_size = ""``, ``gpu_max_per_user = 0``) is a decision, not a gap."""
    sections = ("DevDockSwarmSpawner", "DevDockSpawner", "DockerSpawner", "Spawner")
    return any(section in config and name in config[section] for section in sections)


def missing_guarantees(config: Config) -> list[Gap]:
    """What this hub configuration (the hub's final ``Config``) lacks of devdock's guarantees, in order of harm.

    A setting the site chose itself counts as chosen (homes without a limit, servers stopped with the hub); what
    nothing but devdock's own parts can give (its proxy class, its culler, its pages) is said whenever it is missing.
    """
    hub = config["JupyterHub"] if "JupyterHub" in config else Config()
    gaps = []
    if not _is_devdock_proxy(hub.get("proxy_class", "configurable-http-proxy")):
        gaps.append(
            Gap(
                "idle servers are never found idle while a desktop tab is open: configurable-http-proxy counts noVNC's "
                "constant traffic as activity, so their GPUs are never given back",
                'c.JupyterHub.proxy_class = "devdock"',
            )
        )
    if not any(isinstance(s, dict) and s.get("name") == CULLER_SERVICE for s in hub.get("services", [])):
        gaps.append(
            Gap(
                "no idle culler: idle servers are never stopped and keep their GPUs",
                "from devdock_spawner.hubconfig import configure_culling; configure_culling(c)  # at the end",
            )
        )
    if not _set(config, "home_size"):
        gaps.append(
            Gap(
                "homes have no size limit: one user can fill the host's disk for everybody",
                'c.DevDockSpawner.home_size = "50G"',
            )
        )
    if "cleanup_servers" not in hub:
        gaps.append(
            Gap(
                "every user's server is stopped whenever the hub stops (an upgrade, a restart, a reboot)",
                "c.JupyterHub.cleanup_servers = False",
            )
        )
    if not _set(config, "gpu_max_per_user"):
        gaps.append(Gap("one person may hold every GPU of the host", "c.DevDockSpawner.gpu_max_per_user = 2"))
    if not _has_devdock_pages(hub.get("extra_handlers", [])):
        gaps.append(
            Gap(
                "no /hub/ssh page (users cannot add SSH keys) and no admin overview (/hub/devdock/admin)",
                "from devdock_spawner import hub; hub.configure(c)",
            )
        )
    return gaps


def log_text(gaps: list[Gap]) -> str:
    """The hub log's sentence: every gap with its line."""
    lines = [f"  - {g.guarantee}; add: {g.line}" for g in gaps]
    return "devdock: this hub's configuration lacks some of devdock's guarantees:\n" + "\n".join(lines)

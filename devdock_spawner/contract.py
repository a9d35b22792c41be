"""The contract between the spawner and devdock's desktop image: the ``DEVDOCK_*`` variables of a user's container.

One table, :data:`SPAWNER_TO_IMAGE`: each variable the hub side sets in a user's container, what it means, which
part of the hub sets it and which files of the image read it. :data:`IMAGE_OWN` lists the ``DEVDOCK_*`` names the
image sets for itself (one of its scripts hands a value to another), so that they are not mistaken for the
spawner's. :data:`MIN_UID` is the one number both sides check the account's uid against.

Pure data: no import of the spawner or of the image. ``tests/unit/test_image_contract.py`` holds both sides to
this list (the environment a real spawner builds, the names the spawner's sources set, the names every file of
``images/desktop`` uses), and ``docs/generate_image_contract.py`` renders it as docs/reference/image-contract.md.

Not in this contract: the variables a site hands the *hub* (``DEVDOCK_PUBLIC_URL``, ``DEVDOCK_SSH_PORTS``... read
by jupyterhub_config.py and hubconfig.py; docs/reference/defaults.md), and those of devdock's other images (hub,
proxy, SSH gateway, OIDC), which compose or scripts/up.sh set for those services, never for a user's container.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The lowest uid the account in a user's container may have: below are the system's own accounts (Debian's
#: ``UID_MIN``). The image's entrypoint refuses less (``devdock_check_uid`` in devdock-contract.sh).
MIN_UID = 1000


@dataclass(frozen=True)
class Variable:
    """One ``DEVDOCK_*`` variable of a user's container.

    ``set_by``: where it is set, ``"<file>: <function>"`` (a hub module and the function whose dict or keywords
    name it; a module-level setting names its target instead), or an image file for :data:`IMAGE_OWN`.
    ``read_by``: the image's files that use it, as paths inside the image (``/opt/devdock/bin/...``).
    """

    name: str
    meaning: str
    set_by: tuple[str, ...]
    read_by: tuple[str, ...]


_ENTRYPOINT = "/opt/devdock/bin/devdock-entrypoint"
_USER_START = "/opt/devdock/bin/devdock-user-start"
_EXT = "/opt/devdock/lib/devdock_ext/__init__.py"
_END_TIME = "/opt/devdock/bin/devdock-end-time"
_GET_ENV = "devdock_spawner/spawner.py: DevDockSpawner.get_env"
_HOMES_ENV = "devdock_spawner/spawner_homes.py: HomesMixin.get_env"
_SSH_ENV = "devdock_spawner/spawner_ssh.py: SSHMixin.ssh_environment"
_CULL_ENV = "devdock_spawner/spawner_culling.py: CullingMixin.cull_environment"
_DESKTOP_ENV = "devdock_spawner/spawner_desktop.py: DesktopMixin.desktop_environment"

#: What the hub sets in every user's container (a few only where they apply, as each meaning says), and who reads it.
SPAWNER_TO_IMAGE: tuple[Variable, ...] = (
    # The account
    Variable(
        "DEVDOCK_LOGIN",
        "The account's login name, `naming.login_name` of the hub username (the entrypoint refuses one that "
        "does not match `^[a-z_][a-z0-9_-]{0,31}$`).",
        (_GET_ENV,),
        (_ENTRYPOINT,),
    ),
    Variable(
        "DEVDOCK_UID",
        "The account's uid and gid (`login_uid`; at least `MIN_UID`, 1000).",
        (_GET_ENV,),
        (_ENTRYPOINT, "/opt/devdock/lib/devdock-contract.sh"),
    ),
    Variable(
        "DEVDOCK_HOME_SIZE",
        "The home's size limit in bytes (`home_size`); set only when the home has one. The server says when the "
        "home is (nearly) full.",
        (_HOMES_ENV,),
        (_EXT,),
    ),
    # SSH
    Variable(
        "DEVDOCK_SSH",
        "`1`: bind port 22 and run sshd as the user; `0`: no sshd (`ssh_enabled`).",
        (_SSH_ENV,),
        (_ENTRYPOINT, _USER_START),
    ),
    Variable(
        "DEVDOCK_SSH_AUTHORIZED_KEYS",
        "The public keys the user keeps on the hub, one per line (written root-owned, then unset).",
        (_SSH_ENV,),
        (_ENTRYPOINT,),
    ),
    Variable(
        "DEVDOCK_SSH_TCP_FORWARDING",
        "sshd's `AllowTcpForwarding`: `no`, `local`, `remote` or `yes` (`ssh_tcp_forwarding`).",
        (_SSH_ENV,),
        (_USER_START,),
    ),
    Variable(
        "DEVDOCK_SSH_X11_FORWARDING",
        "sshd's `X11Forwarding`: `yes` or `no` (`ssh_x11_forwarding`).",
        (_SSH_ENV,),
        (_USER_START,),
    ),
    Variable(
        "DEVDOCK_SSH_AGENT_FORWARDING",
        "sshd's `AllowAgentForwarding`: `yes` or `no` (`ssh_agent_forwarding`).",
        (_SSH_ENV,),
        (_USER_START,),
    ),
    Variable(
        "DEVDOCK_SSH_ACTIVITY_INTERVAL",
        "Seconds between the server's checks for SSH sessions and desktop input (default 30): half of "
        "`DEVDOCK_ACTIVITY_INTERVAL`, through `c.DevDockSpawner.environment`.",
        ("jupyterhub_config.py: c.DevDockSpawner.environment",),
        (_EXT,),
    ),
    # Idle culling: the server warns its user before the culler stops it
    Variable(
        "DEVDOCK_CULL_IDLE_TIMEOUT",
        "Seconds without activity after which the culler stops this server (its profile's rule; 0: never).",
        (_CULL_ENV,),
        (_EXT,),
    ),
    Variable(
        "DEVDOCK_CULL_MAX_AGE",
        "Seconds after its start at which the culler stops this server whatever its activity (0: never).",
        (_CULL_ENV,),
        (_EXT, _END_TIME),
    ),
    Variable(
        "DEVDOCK_CULL_STARTED",
        "When the hub started this run (ISO 8601, UTC): the culler counts the maximum age from it, and so do the "
        "server's warnings (the server process starts seconds later; a start that waited in line starts at its turn).",
        (_CULL_ENV,),
        (_EXT, _END_TIME),
    ),
    Variable(
        "DEVDOCK_CULL_WARNING",
        "Seconds before such a stop that the user is warned, in JupyterLab and on the desktop (`cull_warning`).",
        (_CULL_ENV,),
        (_EXT,),
    ),
    # The desktop
    Variable(
        "DEVDOCK_DESKTOP_PRESTART",
        "`1`: start the desktop with the server (`desktop_prestart`, unless many servers start at once); `0`: "
        "when first opened.",
        (_DESKTOP_ENV,),
        (_USER_START,),
    ),
    Variable(
        "DEVDOCK_GL",
        "How the desktop's OpenGL renders: `auto` (on the GPU where there is one) or `software` (`desktop_gl`).",
        (_DESKTOP_ENV,),
        ("/opt/devdock/bin/devdock-gl-env",),
    ),
    Variable(
        "DEVDOCK_KEYBOARD_LAYOUT",
        "The desktop's keyboard layout for setxkbmap, e.g. `de`, `fr(oss)`, `us,ru` (`desktop_keyboard_layout`); "
        "set only when chosen.",
        (_DESKTOP_ENV,),
        ("/opt/devdock/bin/devdock-xstartup",),
    ),
    Variable(
        "DEVDOCK_SELKIES",
        "`1`: serve the Selkies view of the desktop (`/selkies/`); `0`: noVNC only (`desktop_selkies`).",
        (_DESKTOP_ENV,),
        ("/opt/devdock/etc/jupyter/jupyter_server_config.py", "/opt/devdock/lib/devdock_ext/desktop.py"),
    ),
    Variable(
        "DEVDOCK_SELKIES_ENCODER",
        "Selkies' video encoder: `h264enc` or `jpeg` (`desktop_selkies_encoder`).",
        (_DESKTOP_ENV,),
        ("/opt/devdock/bin/devdock-selkies",),
    ),
    # GPUs
    Variable(
        "DEVDOCK_GPUS",
        "The UUIDs of the GPUs allotted to this server, comma-separated; set only when it holds some.",
        ("devdock_spawner/gpu.py: device_config",),
        (
            "/opt/devdock/bin/devdock-gl-env",
            _USER_START,
            "/opt/devdock/lib/devdock_gpu_check.py",
        ),
    ),
    Variable(
        "DEVDOCK_GPU_RESOURCE",
        "On Swarm, the generic resource kind the server's GPUs were scheduled as (`gpu_resource_kind`); set only "
        "when it asked for GPUs. For the server's own tools: no file of the image reads it.",
        ("devdock_spawner/spawner_swarm.py: DevDockSwarmSpawner.create_object",),
        (),
    ),
)

#: ``DEVDOCK_*`` names the image sets and reads itself; the spawner never sets them.
IMAGE_OWN: tuple[Variable, ...] = (
    Variable(
        "DEVDOCK_IMAGE",
        "`desktop`: which devdock image this is (handed on to SSH sessions).",
        ("Dockerfile",),
        (_USER_START,),
    ),
    Variable(
        "DEVDOCK_PATH",
        "The server's PATH, which login shells put back over Debian's.",
        (_USER_START,),
        ("/etc/profile.d/devdock.sh",),
    ),
    Variable(
        "DEVDOCK_DESKTOP_SOCKET",
        "The VNC socket of the desktop session, in a folder only the user can enter.",
        (_USER_START,),
        ("/opt/devdock/bin/devdock-desktop-start", "/usr/local/bin/vncserver"),
    ),
    Variable(
        "DEVDOCK_SAFE_MODE",
        "Why the server runs without the user's own packages (`exit N`), for the notice JupyterLab shows.",
        (_USER_START,),
        (_EXT,),
    ),
)


def names() -> list[str]:
    """The names of :data:`SPAWNER_TO_IMAGE`, sorted."""
    return sorted(v.name for v in SPAWNER_TO_IMAGE)

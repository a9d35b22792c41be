"""Safe, distinct names for containers, volumes, hostnames and login names (pure functions).

Hub usernames may be anything the authenticator accepts: upper case, dots, ``@``, unicode, hundreds
of characters. Docker object names and Linux login names accept much less. The rule used everywhere:

- a name that is already safe is used as it is, so ``alice`` stays ``alice``;
- any other name is folded to ASCII, lower-cased, squeezed to ``[a-z0-9-]`` and truncated, then gets
  ``--`` and hex digits of the SHA-256 of the *original* name: 32 (128 bits) in slugs, 20 (80 bits) in
  login names, which useradd limits to 32 characters. Safe names never contain ``--``, and the folded
  part never does either (runs of other characters become one ``-``), so an altered name can never
  equal an unaltered one, and two altered names are equal only if their hashes are. Finding a second
  username with the same hash as a victim's is a second-preimage search of 2**128 (slugs) or 2**80
  (logins) SHA-256 evaluations: hopeless, unlike the 32-bit hashes of devdock before 0.2, which
  :func:`legacy_slug` still computes so that homes made then are found again (by their owner label,
  never by their name alone: see ``DevDockSpawner.resolve_home_volume``).

Docker names join the user and server parts with ``_``, which no slug contains, so ``(user, server)``
pairs map to distinct names too.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

#: Slugs (container, volume, hostname parts): lower-case words joined by single dashes.
_SAFE_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: Login names: a letter first, then words joined by single ``-`` or ``_``; useradd's own limit is 32.
_SAFE_LOGIN = re.compile(r"^[a-z][a-z0-9]*([-_][a-z0-9]+)*$")

SLUG_MAX = 63
LOGIN_MAX = 32
#: hex digits of the hash in slugs (128 bits) and in login names (80 bits, to fit useradd's 32 characters)
HASH_LEN = 32
LOGIN_HASH_LEN = 20
#: how devdock named things before 0.2: 8 hex digits (32 bits) in slugs of at most 40 characters
LEGACY_HASH_LEN = 8
LEGACY_SLUG_MAX = 40

#: Accounts that exist in Debian/Ubuntu base images or mean something special; a hub user with one of
#: these names gets a hashed login instead (the user "root" must never become root).
RESERVED_LOGINS = frozenset(
    """
    root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats nobody
    _apt systemd-network systemd-resolve systemd-timesync messagebus sshd tss polkitd avahi
    ubuntu debian admin operator halt shutdown adm wheel sudo docker staff users nogroup
    """.split()
)


def _hash(name: str, length: int = HASH_LEN) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:length]


def _fold(name: str) -> str:
    """Lower-case ASCII approximation: ``Zoë.Müller`` -> ``zoe-muller``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")


def safe_slug(name: str, max_length: int = SLUG_MAX) -> str:
    """A DNS-label-like slug of ``name``: ``[a-z0-9-]``, at most ``max_length`` characters.

    >>> safe_slug("alice")
    'alice'
    >>> safe_slug("Alice")
    'alice--3bc51062cd3a0a8bd0a6a1a3bd4d8f31'
    """
    return _slug(name, max_length, HASH_LEN)


def legacy_slug(name: str) -> str:
    """The slug devdock gave ``name`` before 0.2 (32-bit hash): only to find homes made back then."""
    return _slug(name, LEGACY_SLUG_MAX, LEGACY_HASH_LEN)


def _slug(name: str, max_length: int, hash_len: int) -> str:
    if max_length < hash_len + 3:
        raise ValueError(f"max_length must be at least {hash_len + 3}")
    if _SAFE_SLUG.match(name) and len(name) <= max_length:
        return name
    base = _fold(name)[: max_length - hash_len - 2].rstrip("-") or "x"
    return f"{base}--{_hash(name, hash_len)}"


def login_name(username: str) -> str:
    """The Linux login name for a hub user, valid for ``useradd`` and never a system account.

    >>> login_name("alice")
    'alice'
    >>> login_name("root")
    'root--4813494d137e1631bba3'
    """
    if _SAFE_LOGIN.match(username) and len(username) <= LOGIN_MAX and username not in RESERVED_LOGINS:
        return username
    room = LOGIN_MAX - LOGIN_HASH_LEN - 2
    base = _fold(username)[:room].rstrip("-")
    if not base or not base[0].isalpha():
        base = ("u" + base)[:room].rstrip("-")
    return f"{base}--{_hash(username, LOGIN_HASH_LEN)}"


def checked_login(login: str) -> str:
    """``login`` if it is a valid, non-reserved login name (as read back from a label), else ``""``."""
    ok = _SAFE_LOGIN.match(login) or re.fullmatch(r"[a-z][a-z0-9-]*--[0-9a-f]{8,20}", login)
    return login if ok and len(login) <= LOGIN_MAX and login not in RESERVED_LOGINS else ""


def object_name(prefix: str, user_slug: str, server_slug: str = "") -> str:
    """Docker container name: ``<prefix>-<user>`` or ``<prefix>-<user>_<server>``."""
    return f"{prefix}-{user_slug}_{server_slug}" if server_slug else f"{prefix}-{user_slug}"


def home_volume_name(prefix: str, user_slug: str, server_slug: str = "") -> str:
    """Docker volume name of a server's home: ``<prefix>-home-<user>[_<server>]``."""
    return object_name(f"{prefix}-home", user_slug, server_slug)


def hostname(user_slug: str, server_slug: str = "") -> str:
    """Container hostname (shown in the shell prompt); at most 63 characters, DNS-safe."""
    name = f"{user_slug}-{server_slug}" if server_slug else user_slug
    return name.replace("--", "-")[:63].rstrip("-")


LABEL_PREFIX = "io.devdock"
#: Every label devdock writes, in one place. Labels let an admin (and devdock itself after a hub restart) see
#: what belongs to whom without parsing names: ``docker ps --filter label=io.devdock.owner=alice``.
MANAGED_LABEL = f"{LABEL_PREFIX}.managed"
OWNER_LABEL = f"{LABEL_PREFIX}.owner"
SERVER_LABEL = f"{LABEL_PREFIX}.server"
LOGIN_LABEL = f"{LABEL_PREFIX}.login"
VERSION_LABEL = f"{LABEL_PREFIX}.version"
HUB_LABEL = f"{LABEL_PREFIX}.hub"
#: the host SSH port of a server (also while its container is stopped)
SSH_PORT_LABEL = f"{LABEL_PREFIX}.ssh-port"
#: the GPU UUIDs a server holds, comma-separated
GPU_LABEL = f"{LABEL_PREFIX}.gpus"
#: what a helper object is for (``gpu-probe``, ``network-keeper``, ``offboarding``)
ROLE_LABEL = f"{LABEL_PREFIX}.role"


def labels(
    *, username: str, server: str, login: str, version: str, hub: str = "devdock", extra: dict | None = None
) -> dict:
    """Labels set on every container and volume devdock creates."""
    result = {
        MANAGED_LABEL: "true",
        OWNER_LABEL: username,
        SERVER_LABEL: server,
        LOGIN_LABEL: login,
        VERSION_LABEL: version,
        HUB_LABEL: hub,
    }
    for key, value in (extra or {}).items():
        result[str(key)] = str(value)
    return result


def server_key(username: str, server: str = "") -> str:
    """The identity of one server, ``user/server``, that keys GPU and SSH-port allocations.

    Distinct for distinct pairs: JupyterHub refuses ``/`` in server names, so the last ``/`` splits the key.
    """
    return f"{username}/{server}"


def server_key_from_labels(labels: dict | None) -> str | None:
    """The server key of a devdock object from its labels, or None for anything that is not a user's server."""
    labels = labels or {}
    if OWNER_LABEL not in labels:
        return None
    return server_key(labels[OWNER_LABEL], labels.get(SERVER_LABEL, ""))

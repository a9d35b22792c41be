"""SSH public keys from the hub side: validation (pure), a small file-based key store and its index.

Users register keys on the hub (their own ``/hub/ssh`` page, and nothing else); the
spawner hands them to the container, whose entrypoint writes them to a root-owned file sshd reads.
Only plain key lines are accepted: ``<type> <base64> [comment]``. Options such as ``command=`` or
``from=`` and unknown or weak key types are refused with a sentence saying why. The SSH gateway asks who keeps
a key for every key a client offers; :class:`KeyIndex` answers from memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import struct
import tempfile
import threading
from dataclasses import dataclass
from urllib.parse import quote, unquote

from . import naming

log = logging.getLogger("JupyterHub")  # the hub's own log

#: Key types accepted, with the minimum size where size matters. DSA is gone from OpenSSH; RSA below
#: 2048 bits is breakable.
KEY_TYPES = {
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
}
MIN_RSA_BITS = 2048
MAX_KEYS = 20
MAX_LINE = 16 * 1024
_COMMENT = re.compile(r"^[\x20-\x7e]{0,200}$")


class InvalidKey(ValueError):
    """A key line that is not accepted; the message says which line and why."""


class UnusableUsername(ValueError):
    """A username devdock cannot keep keys for; the message says why, for the user."""


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str
    comment: str = ""

    def line(self) -> str:
        return f"{self.type} {self.blob} {self.comment}".strip()


def _read_string(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise ValueError("truncated")
    (length,) = struct.unpack(">I", data[offset : offset + 4])
    end = offset + 4 + length
    if end > len(data):
        raise ValueError("truncated")
    return data[offset + 4 : end], end


def _check_blob(key_type: str, blob: bytes) -> None:
    """The key's binary form must match its declared type and be strong enough."""
    embedded, offset = _read_string(blob, 0)
    if embedded.decode(errors="replace") != key_type:
        raise ValueError(f"the key data says {embedded.decode(errors='replace')!r}, not {key_type!r}")
    if key_type == "ssh-rsa":
        _exponent, offset = _read_string(blob, offset)
        modulus, offset = _read_string(blob, offset)
        bits = int.from_bytes(modulus, "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits, this one has {bits}")
    elif key_type.endswith("ed25519") or key_type.endswith("ed25519@openssh.com"):
        point, offset = _read_string(blob, offset)
        if len(point) != 32:
            raise ValueError("an ed25519 key is 32 bytes")
    elif "ecdsa" in key_type:
        curve, offset = _read_string(blob, offset)
        if curve.decode(errors="replace") not in key_type:
            raise ValueError("the curve does not match the key type")
        _point, offset = _read_string(blob, offset)
    if key_type.startswith("sk-"):
        _application, offset = _read_string(blob, offset)
    if offset != len(blob):
        raise ValueError("unexpected data after the key")


def parse_key(line: str) -> PublicKey:
    """One public key line, or :class:`InvalidKey` saying what is wrong with it."""
    if len(line) > MAX_LINE:
        raise InvalidKey("the line is too long to be a public key")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise InvalidKey("a public key line looks like 'ssh-ed25519 AAAA... you@laptop'")
    key_type, data = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    if key_type not in KEY_TYPES:
        if "=" in key_type or '"' in key_type:
            raise InvalidKey("key options (command=, from=, ...) are not allowed; paste the bare key")
        if key_type == "ssh-dss":
            raise InvalidKey("DSA keys are insecure and no longer accepted; use ssh-keygen -t ed25519")
        raise InvalidKey(f"unknown key type {key_type[:40]!r}; use ssh-keygen -t ed25519")
    try:
        blob = base64.b64decode(data, validate=True)
        _check_blob(key_type, blob)
    except (binascii.Error, ValueError) as e:
        raise InvalidKey(f"the {key_type} key data is damaged ({e})") from None
    if not _COMMENT.match(comment):
        raise InvalidKey("the comment after the key may only contain printable ASCII (200 characters at most)")
    return PublicKey(key_type, data, comment)


def parse_keys(text: str) -> list[PublicKey]:
    """Every key in ``text`` (one per line; blank lines and ``#`` comments ignored), de-duplicated."""
    if not isinstance(text, str):
        raise InvalidKey("SSH keys must be text, one key per line")
    keys: list[PublicKey] = []
    seen = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            key = parse_key(line)
        except InvalidKey as e:
            raise InvalidKey(f"SSH key on line {number}: {e}") from None
        if key.blob not in seen:
            seen.add(key.blob)
            keys.append(key)
    if len(keys) > MAX_KEYS:
        raise InvalidKey(f"at most {MAX_KEYS} SSH keys per user")
    return keys


def key_id(key: PublicKey) -> bytes:
    """The SHA-256 of the key's binary form: what OpenSSH's fingerprint shows, and what the index is keyed by."""
    return hashlib.sha256(base64.b64decode(key.blob)).digest()


def fingerprint(key_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key line (what ``ssh`` shows on first connection)."""
    try:
        key = parse_key(key_line)
    except InvalidKey:
        return ""
    digest = hashlib.sha256(base64.b64decode(key.blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_line(endpoint: tuple[str, int] | None, key_line: str) -> str:
    """The ``~/.ssh/known_hosts`` line for a server's host key: ``[host]:port type blob``."""
    if not endpoint or not fingerprint(key_line):
        return ""
    host, port = endpoint
    key = parse_key(key_line)
    return f"[{host}]:{port} {key.type} {key.blob}" if port != 22 else f"{host} {key.type} {key.blob}"


class KeyStore:
    """One file of validated keys per hub user, written atomically (``<dir>/<slug>.pub``).

    The file's first line names its owner, percent-encoded (``# devdock keys, owner percent-encoded:
    alice%40example.org``), so that no username can put a line break into it: the owner line always ends at the
    first ``\\n``, and only the lines after it are keys. (devdock 0.2 to 0.3 wrote the name as it was, ``# devdock
    keys of <username>``: a name with U+2028, ``\\x0b`` or ``\\x85`` was then split one way when written and another
    when read, and reading every file for the gateway failed for everyone. Such files are still read, by the same
    rule, and the next save writes the new line.) A file that names somebody else is never used: two users can
    only meet in one file if their slugs collide, which devdock's naming makes infeasible, and this check makes it
    harmless too. Files written before devdock 0.2 (named after the old 32-bit slug, no owner line) move to the new
    name on first use, unless the hub knows another user with the same old slug (``legacy_shared``).

    Every change goes through :meth:`save` and :meth:`delete`, which keep ``index`` (the hub's :class:`KeyIndex`
    of this folder) up to date.
    """

    OWNER = "# devdock keys, owner percent-encoded: "
    #: the owner line of devdock 0.2 to 0.3: the username as it was
    LEGACY_OWNER = "# devdock keys of "

    def __init__(self, directory: str, legacy_shared=None, index: KeyIndex | None = None):
        self.directory = directory
        #: ``legacy_shared(username)``: True when another hub user had the same pre-0.2 slug
        self.legacy_shared = legacy_shared or (lambda username: False)
        self.index = index

    def _path(self, slug: str) -> str:
        return os.path.join(self.directory, f"{slug}.pub")

    def path(self, username: str) -> str:
        return self._path(naming.safe_slug(checked_username(username)))

    def _read(self, path: str) -> str | None:
        try:
            # newline="": no translation of "\r"; the owner line ends at the first "\n", whatever the name holds.
            with open(path, encoding="utf-8", errors="replace", newline="") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def split(self, text: str) -> tuple[str | None, str]:
        """``(owner, the key lines)`` of a file's text; the owner is None for a file without an owner line."""
        first, _, rest = text.partition("\n")
        if first.startswith(self.OWNER):
            return unquote(first[len(self.OWNER) :]), rest
        if first.startswith(self.LEGACY_OWNER):
            return first[len(self.LEGACY_OWNER) :], rest
        return None, text

    def _owner(self, text: str) -> str | None:
        return self.split(text)[0]

    def load(self, username: str) -> list[PublicKey]:
        text = self._read(self.path(username))
        if text is None:
            return self._adopt_legacy(username)
        owner, keys = self.split(text)
        if owner is not None and owner != username:
            log.error("devdock: key file %s belongs to %r, not %r: ignored", self.path(username), owner, username)
            return []
        return parse_keys(keys)

    def _adopt_legacy(self, username: str) -> list[PublicKey]:
        legacy = self._path(naming.legacy_slug(username))
        if legacy == self.path(username):
            return []
        text = self._read(legacy)
        if text is None or self._owner(text) not in (None, username) or self.legacy_shared(username):
            return []
        keys = parse_keys(self.split(text)[1])
        self.save(username, keys)
        os.unlink(legacy)
        log.info("devdock: moved the SSH keys of %r from %s to %s", username, legacy, self.path(username))
        return keys

    def save(self, username: str, keys: list[PublicKey]) -> None:
        path = self.path(username)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(self.OWNER + owner_line(username) + "\n")
                f.write("".join(key.line() + "\n" for key in keys))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        if self.index is not None:
            self.index.set(username, keys)

    def scan(self) -> dict[str, list[PublicKey]]:
        """Every user's keys, read from the folder: ``{owner: keys}`` (blocking: run it in a thread).

        A file counts only under its owner's own name (so a file without an owner line, devdock 0.1's, counts once
        it moved there); a file that cannot be read as keys is left out with an error in the log, never failing the
        others.
        """
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            if not name.endswith(".pub") or name.startswith("."):
                continue
            path = os.path.join(self.directory, name)
            owner, keys = self.split(self._read(path) or "")
            try:
                if owner is None or self.path(owner) != path:
                    continue
                found[owner] = parse_keys(keys)
            except (InvalidKey, UnusableUsername) as e:
                log.error("devdock: the SSH key file %s is left out: %s", path, e)
        return found

    def owners_of(self, key_line: str) -> list[str]:
        """The users who keep this public key (``type blob``), read from their files now; none for junk.

        The hub answers the gateway from its :class:`KeyIndex` instead, which reads the files once.
        """
        index = KeyIndex(self)
        index.load(self.scan())
        return index.owners_of(key_line)

    def delete(self, username: str) -> list[str]:
        """Remove ``username``'s key file (and a pre-0.2 one that is theirs); returns the paths removed."""
        removed = []
        for path in (self.path(username), self._path(naming.legacy_slug(username))):
            text = self._read(path)
            if text is None or path in removed:
                continue
            owner = self._owner(text)
            if owner == username or (owner is None and not self.legacy_shared(username)):
                os.unlink(path)
                removed.append(path)
        if self.index is not None:
            self.index.set(username, [])
        return removed


class KeyIndex:
    """Which users keep which public key, in memory: the SSH gateway's lookups, with no file read per lookup.

    sshd on the gateway asks for every key a client offers, before the client has proved anything. Reading every
    user's file for each offer cost the hub's event loop about 69 ms at 1,000 users with 5 keys each: some 15
    offers a second from anybody stopped logins, spawns and the culler for everyone (issue 30). The index reads the
    files once, in a thread, at its first use (:meth:`ready`), and follows every change made through the hub's
    :class:`KeyStore` (saves on ``/hub/ssh``, removal at offboarding). A key file changed by hand is seen at the
    hub's next start.
    """

    def __init__(self, store: KeyStore):
        self.store = store
        self._lock = threading.Lock()  # the scan's thread and the event loop both write
        self._owners: dict[bytes, set[str]] = {}  # key_id -> users
        self._keys_of: dict[str, set[bytes]] = {}  # user -> key_ids
        self._set_before_load: set[str] = set()  # users whose keys changed while the scan ran: theirs wins
        self._loaded = False
        self._loading: asyncio.Future | None = None

    async def ready(self) -> None:
        """Read the key files once (in a thread, off the event loop); every caller waits for the same read."""
        if self._loaded:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load_in_thread())
        loading = self._loading
        try:
            await asyncio.shield(loading)
        except Exception:
            if self._loading is loading:
                self._loading = None  # the next lookup tries again
            raise

    async def _load_in_thread(self) -> None:
        found = await asyncio.get_running_loop().run_in_executor(None, self.store.scan)
        self.load(found)
        log.info("devdock: SSH key index of %s: %d users, %d keys", self.store.directory, len(found),
                 sum(len(keys) for keys in found.values()))  # fmt: skip

    def load(self, found: dict[str, list[PublicKey]]) -> None:
        """Take what :meth:`KeyStore.scan` found, except for users whose keys changed since it began."""
        with self._lock:
            for owner, keys in found.items():
                if owner not in self._set_before_load:
                    self._replace(owner, keys)
            self._set_before_load.clear()
            self._loaded = True

    def set(self, username: str, keys: list[PublicKey]) -> None:
        """``username`` keeps exactly ``keys`` from now on (none: the user keeps no key)."""
        with self._lock:
            if not self._loaded:
                self._set_before_load.add(username)
            self._replace(username, keys)

    def _replace(self, username: str, keys: list[PublicKey]) -> None:
        for old in self._keys_of.pop(username, ()):
            owners = self._owners.get(old)
            if owners is not None:
                owners.discard(username)
                if not owners:
                    del self._owners[old]
        ids = {key_id(key) for key in keys}
        if ids:
            self._keys_of[username] = ids
        for new in ids:
            self._owners.setdefault(new, set()).add(username)

    def owners_of(self, key_line: str) -> list[str]:
        """The users who keep this public key (``type blob``, a comment allowed), sorted; none for junk."""
        try:
            wanted = key_id(parse_key(key_line))
        except InvalidKey:
            return []
        with self._lock:
            return sorted(self._owners.get(wanted, ()))


def key_index(directory: str) -> KeyIndex:
    """The hub's one index of the key files in ``directory`` (shared by every spawner and the gateway's API)."""
    directory = os.path.abspath(directory)
    if directory not in _KEY_INDEXES:
        _KEY_INDEXES[directory] = KeyIndex(KeyStore(directory))
    return _KEY_INDEXES[directory]


#: The hub process's key indexes, by key folder (one in practice: ``ssh_keys_dir``).
_KEY_INDEXES: dict[str, KeyIndex] = {}


def checked_username(username: str) -> str:
    """``username`` if devdock can keep keys for it, else :class:`UnusableUsername` with a sentence.

    devdock accepts every name the hub accepts that is Unicode text: dots, ``@``, ``+``, letters of any script,
    spaces, even control characters and line separators (U+2028), since every place a name is written to is
    encoded for it (the key file's owner line, the gateway's forced command and ``~/.ssh/config``: percent-
    encoded; Docker names: slugs). What it refuses is a name that is not text at all: one with a lone UTF-16
    surrogate, which no web form can send but an authenticator's own code could make.
    """
    if not isinstance(username, str) or not username:
        raise UnusableUsername("devdock needs a username to keep SSH keys for")
    try:
        username.encode("utf-8")
    except UnicodeEncodeError:
        raise UnusableUsername(
            f"devdock cannot keep SSH keys for the username {username!r}: it is not Unicode text (it holds a lone "
            "surrogate); ask an admin to give the account a name made of characters"
        ) from None
    return username


def owner_line(username: str) -> str:
    """A username as it is written on the key file's owner line: percent-encoded, printable ASCII only."""
    return quote(checked_username(username), safe="@+-._~")

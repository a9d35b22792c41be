"""SSH public keys from the hub side: validation (pure) and a small file-based key store.

Users register keys on the hub (their own ``/hub/ssh`` page, and nothing else); the
spawner hands them to the container, whose entrypoint writes them to a root-owned file sshd reads.
Only plain key lines are accepted: ``<type> <base64> [comment]``. Options such as ``command=`` or
``from=`` and unknown or weak key types are refused with a sentence saying why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import struct
import tempfile
from dataclasses import dataclass

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

    The file's first line names its owner (``# devdock keys of <username>``), and a file that names
    somebody else is never used: two users can only meet in one file if their slugs collide, which
    devdock's naming makes infeasible, and this check makes it harmless too. Files written before
    devdock 0.2 (named after the old 32-bit slug, no owner line) move to the new name on first use,
    unless the hub knows another user with the same old slug (``legacy_shared``).
    """

    HEADER = "# devdock keys of "

    def __init__(self, directory: str, legacy_shared=None):
        self.directory = directory
        #: ``legacy_shared(username)``: True when another hub user had the same pre-0.2 slug
        self.legacy_shared = legacy_shared or (lambda username: False)

    def _path(self, slug: str) -> str:
        return os.path.join(self.directory, f"{slug}.pub")

    def path(self, username: str) -> str:
        return self._path(naming.safe_slug(username))

    def _read(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _owner(self, text: str) -> str | None:
        first = text.split("\n", 1)[0]
        return first[len(self.HEADER) :] if first.startswith(self.HEADER) else None

    def load(self, username: str) -> list[PublicKey]:
        text = self._read(self.path(username))
        if text is None:
            return self._adopt_legacy(username)
        owner = self._owner(text)
        if owner is not None and owner != username:
            log.error("devdock: key file %s belongs to %r, not %r: ignored", self.path(username), owner, username)
            return []
        return parse_keys(text)

    def _adopt_legacy(self, username: str) -> list[PublicKey]:
        legacy = self._path(naming.legacy_slug(username))
        if legacy == self.path(username):
            return []
        text = self._read(legacy)
        if text is None or self._owner(text) not in (None, username) or self.legacy_shared(username):
            return []
        keys = parse_keys(text)
        self.save(username, keys)
        os.unlink(legacy)
        log.info("devdock: moved the SSH keys of %r from %s to %s", username, legacy, self.path(username))
        return keys

    def save(self, username: str, keys: list[PublicKey]) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.HEADER + _one_line(username) + "\n")
                f.write("".join(key.line() + "\n" for key in keys))
            os.replace(tmp, self.path(username))
        except BaseException:
            os.unlink(tmp)
            raise

    def owners_of(self, key_line: str) -> list[str]:
        """The users who keep this public key (``type blob``), read from their own files; none for junk.

        A file whose owner line is missing (devdock 0.1's) counts only once it moved to its owner's name.
        """
        try:
            wanted = parse_key(key_line)
        except InvalidKey:
            return []
        owners = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(".pub") or name.startswith("."):
                continue
            text = self._read(os.path.join(self.directory, name)) or ""
            owner = self._owner(text)
            if owner is None or self.path(owner) != os.path.join(self.directory, name):
                continue
            if any(k.type == wanted.type and k.blob == wanted.blob for k in parse_keys(text)):
                owners.append(owner)
        return owners

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
        return removed


def _one_line(text: str) -> str:
    """A username as it can be written on one comment line."""
    return text.replace("\n", "\\n").replace("\r", "\\r")

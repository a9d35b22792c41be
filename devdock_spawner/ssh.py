"""SSH public keys from the hub side: validation (pure) and a small file-based key store.

Users register keys on the hub (the ``/hub/ssh`` page, or ``ssh_keys`` in the spawn options); the
spawner hands them to the container, whose entrypoint writes them to a root-owned file sshd reads.
Only plain key lines are accepted: ``<type> <base64> [comment]``. Options such as ``command=`` or
``from=`` and unknown or weak key types are refused with a sentence saying why.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
import tempfile
from dataclasses import dataclass

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


class KeyStore:
    """One file of validated keys per hub user, written atomically (``<dir>/<slug>.pub``)."""

    def __init__(self, directory: str):
        self.directory = directory

    def _path(self, slug: str) -> str:
        return os.path.join(self.directory, f"{slug}.pub")

    def load(self, slug: str) -> list[PublicKey]:
        try:
            with open(self._path(slug), encoding="utf-8") as f:
                return parse_keys(f.read())
        except FileNotFoundError:
            return []

    def save(self, slug: str, keys: list[PublicKey]) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(key.line() + "\n" for key in keys))
            os.replace(tmp, self._path(slug))
        except BaseException:
            os.unlink(tmp)
            raise

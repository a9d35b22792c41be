"""SSH public key validation (tables): real keys from ssh-keygen pass, junk is refused with a reason."""

from __future__ import annotations

import base64
import struct
import subprocess

import pytest

from devdock_spawner.ssh import MAX_KEYS, InvalidKey, KeyStore, parse_key, parse_keys


def make_key(tmp_path, key_type: str, bits: int | None = None) -> str:
    path = tmp_path / f"k-{key_type}-{bits}"
    cmd = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "me@laptop", "-f", str(path)]
    if bits:
        cmd += ["-b", str(bits)]
    subprocess.run(cmd, check=True)
    return (tmp_path / f"{path.name}.pub").read_text().strip()


GOOD = [
    ("ed25519", "ed25519", None),
    ("ecdsa-256", "ecdsa", 256),
    ("ecdsa-521", "ecdsa", 521),
    ("rsa-3072", "rsa", 3072),
]


@pytest.mark.parametrize(("key_type", "bits"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_real_keys_are_accepted(tmp_path, key_type, bits):
    line = make_key(tmp_path, key_type, bits)
    key = parse_key(line)
    assert key.line() == line
    assert key.comment == "me@laptop"


def _blob(*parts: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(p)) + p for p in parts)).decode()


ED = _blob(b"ssh-ed25519", b"\x01" * 32)
WEAK_RSA = _blob(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xff" * 128)  # 1024-bit modulus
BAD = [
    ("command-option", f'command="/bin/sh" ssh-ed25519 {ED}', "options"),
    ("from-option", f'from="*.example.org" ssh-ed25519 {ED}', "options"),
    ("no-pty-option", f"no-pty,restrict ssh-ed25519 {ED}", "unknown key type"),
    ("dsa", f"ssh-dss {_blob(b'ssh-dss', b'x')}", "DSA"),
    ("type-mismatch", f"ssh-rsa {ED}", "says 'ssh-ed25519'"),
    ("short-ed25519", f"ssh-ed25519 {_blob(b'ssh-ed25519', b'1' * 31)}", "32 bytes"),
    ("weak-rsa", f"ssh-rsa {WEAK_RSA}", "2048 bits"),
    ("trailing-data", f"ssh-ed25519 {_blob(b'ssh-ed25519', b'1' * 32, b'extra')}", "unexpected data"),
    ("not-base64", "ssh-ed25519 %%%%", "damaged"),
    ("truncated", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "damaged"),
    ("no-data", "ssh-ed25519", "looks like"),
    ("control-chars-in-comment", f"ssh-ed25519 {ED} me\x07@laptop", "printable"),
    ("huge", "ssh-ed25519 " + "A" * 20000, "too long"),
]


@pytest.mark.parametrize(("line", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_keys_are_refused_with_a_reason(line, reason):
    with pytest.raises(InvalidKey, match=reason):
        parse_key(line)


def test_several_keys_comments_and_duplicates():
    text = f"# laptop\nssh-ed25519 {ED} a\n\nssh-ed25519 {ED} again\n"
    keys = parse_keys(text)
    assert [k.comment for k in keys] == ["a"]


def test_the_failing_line_is_named():
    with pytest.raises(InvalidKey, match="line 2"):
        parse_keys(f"ssh-ed25519 {ED}\nnonsense here\n")


def test_too_many_keys():
    lines = "\n".join(f"ssh-ed25519 {_blob(b'ssh-ed25519', bytes([i]) * 32)}" for i in range(MAX_KEYS + 1))
    with pytest.raises(InvalidKey, match=f"at most {MAX_KEYS}"):
        parse_keys(lines)


def test_non_text_is_refused():
    with pytest.raises(InvalidKey, match="text"):
        parse_keys(["ssh-ed25519", ED])


def test_key_store_round_trip_and_atomic_replace(tmp_path):
    store = KeyStore(str(tmp_path / "keys"))
    assert store.load("alice") == []
    store.save("alice", parse_keys(f"ssh-ed25519 {ED} a"))
    assert [k.comment for k in store.load("alice")] == ["a"]
    store.save("alice", [])
    assert store.load("alice") == []
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["alice.pub"]


def test_key_store_never_serves_a_file_that_names_another_owner(tmp_path):
    store = KeyStore(str(tmp_path / "keys"))
    store.save("alice", parse_keys(f"ssh-ed25519 {ED} a"))
    # Someone else's file under alice's name (a collision, or a file copied by hand): never used.
    path = store.path("alice")
    text = open(path).read().replace("of alice", "of mallory")
    open(path, "w").write(text)
    assert store.load("alice") == []
    assert store.delete("alice") == []  # and not removed on alice's behalf either
    assert open(path).read() == text


def test_key_store_moves_a_pre_0_4_file_once_and_only_for_its_user(tmp_path):
    import hashlib

    folder = tmp_path / "keys"
    folder.mkdir()
    # Before 0.4, "Zoë" had the slug "zoe--" + 8 hex digits of the name's SHA-256, and no owner line.
    old = folder / f"zoe--{hashlib.sha256('Zoë'.encode()).hexdigest()[:8]}.pub"
    old.write_text(f"ssh-ed25519 {ED} zoe\n")
    assert KeyStore(str(folder), legacy_shared=lambda u: True).load("Zoë") == []  # two users had that slug
    assert old.exists()
    store = KeyStore(str(folder))
    assert [k.comment for k in store.load("Zoë")] == ["zoe"]
    assert not old.exists()
    assert open(store.path("Zoë")).readline() == "# devdock keys of Zoë\n"
    assert [k.comment for k in store.load("Zoë")] == ["zoe"]


def test_key_store_delete_removes_the_users_files(tmp_path):
    store = KeyStore(str(tmp_path / "keys"))
    store.save("bob", parse_keys(f"ssh-ed25519 {ED} b"))
    assert store.delete("bob") == [store.path("bob")]
    assert store.load("bob") == []
    assert store.delete("bob") == []

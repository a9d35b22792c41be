"""SSH public key validation (tables): real keys from ssh-keygen pass, junk is refused with a reason."""

from __future__ import annotations

import asyncio
import base64
import struct
import subprocess
import threading

import pytest

from devdock_spawner.ssh import (
    MAX_KEYS,
    InvalidKey,
    KeyIndex,
    KeyStore,
    UnusableUsername,
    parse_key,
    parse_keys,
)


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
    text = open(path).read().replace("percent-encoded: alice", "percent-encoded: mallory")
    open(path, "w").write(text)
    assert store.load("alice") == []
    assert store.delete("alice") == []  # and not removed on alice's behalf either
    assert open(path).read() == text
    legacy = f"# devdock keys of mallory\nssh-ed25519 {ED} a\n"  # the owner line of devdock 0.3, the same
    open(path, "w").write(legacy)
    assert store.load("alice") == [] and store.owners_of(f"ssh-ed25519 {ED}") == []


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
    assert open(store.path("Zoë")).readline() == "# devdock keys, owner percent-encoded: Zo%C3%AB\n"
    assert [k.comment for k in store.load("Zoë")] == ["zoe"]


def test_key_store_delete_removes_the_users_files(tmp_path):
    store = KeyStore(str(tmp_path / "keys"))
    store.save("bob", parse_keys(f"ssh-ed25519 {ED} b"))
    assert store.delete("bob") == [store.path("bob")]
    assert store.load("bob") == []
    assert store.delete("bob") == []


def _key(i: int, comment: str = "") -> str:
    return f"ssh-ed25519 {_blob(b'ssh-ed25519', bytes([i]) * 32)} {comment}".strip()


#: Characters str.splitlines() breaks a line at and split("\n") does not (issue 30), and the two it both does.
LINE_BREAKERS = [
    ("u2028-line-separator", "\u2028"),
    ("x0b-vertical-tab", "\x0b"),
    ("x0c-form-feed", "\x0c"),
    ("x1c-file-separator", "\x1c"),
    ("x1d-group-separator", "\x1d"),
    ("x1e-record-separator", "\x1e"),
    ("x85-next-line", "\x85"),
    ("u2029-paragraph-separator", "\u2029"),
    ("newline", "\n"),
    ("carriage-return", "\r"),
]


@pytest.mark.parametrize("char", [c[1] for c in LINE_BREAKERS], ids=[c[0] for c in LINE_BREAKERS])
def test_a_username_with_a_line_break_keeps_its_keys_and_breaks_nobody_elses(tmp_path, char):
    store = KeyStore(str(tmp_path / "keys"))
    store.save("alice", parse_keys(_key(1, "alice")))
    odd = f"eve{char}ssh-ed25519 {_blob(b'ssh-ed25519', bytes([9]) * 32)}"  # a name that looks like a key, too
    store.save(odd, parse_keys(_key(2, "eve")))
    owner_line = open(store.path(odd), "rb").read().split(b"\n", 1)[0]
    assert owner_line.isascii() and all(0x20 <= b < 0x7F for b in owner_line), owner_line  # one printable line
    assert [k.comment for k in store.load(odd)] == ["eve"]
    assert [k.comment for k in store.load("alice")] == ["alice"]
    assert store.owners_of(_key(1)) == ["alice"]  # everybody else's lookups still work
    assert store.owners_of(_key(2)) == [odd]
    assert store.owners_of(_key(9)) == []  # and the name's own text is not a key of anybody
    assert sorted(store.scan()) == sorted(["alice", odd])


@pytest.mark.parametrize("char", [c[1] for c in LINE_BREAKERS[:8]], ids=[c[0] for c in LINE_BREAKERS[:8]])
def test_a_key_file_of_devdock_0_3_with_a_line_break_in_the_name_is_read_the_same_way_it_was_written(tmp_path,
                                                                                                     char):  # fmt: skip
    # devdock 0.3 wrote the name as it was on the owner line: str.splitlines() then cut it in two.
    store = KeyStore(str(tmp_path / "keys"))
    store.save("alice", parse_keys(_key(1, "alice")))
    odd = f"eve{char}x"
    with open(store.path(odd), "w", encoding="utf-8", newline="") as f:
        f.write(f"# devdock keys of {odd}\n{_key(2, 'eve')}\n")
    assert [k.comment for k in store.load(odd)] == ["eve"]
    assert store.owners_of(_key(1)) == ["alice"]
    assert store.owners_of(_key(2)) == [odd]
    store.save(odd, store.load(odd))  # the next save writes the encoded owner line
    assert open(store.path(odd), encoding="utf-8").readline() == (
        f"# devdock keys, owner percent-encoded: eve%{ord(char):02X}x\n"
        if ord(char) < 0x80
        else f"# devdock keys, owner percent-encoded: eve{''.join(f'%{b:02X}' for b in char.encode())}x\n"
    )


NAMES_THAT_KEEP_WORKING = ["alice@example.org", "zoe.muller", "bob+lab", "Zoë", "李雷", "o'brien", "100%", "a b"]


@pytest.mark.parametrize("name", NAMES_THAT_KEEP_WORKING)
def test_usernames_the_identity_provider_allows_keep_their_keys(tmp_path, name):
    store = KeyStore(str(tmp_path / "keys"))
    store.save(name, parse_keys(_key(3, "k")))
    assert [k.comment for k in store.load(name)] == ["k"]
    assert store.owners_of(_key(3)) == [name]


def test_a_username_that_is_not_text_is_refused_with_a_sentence(tmp_path):
    store = KeyStore(str(tmp_path / "keys"))
    with pytest.raises(UnusableUsername, match="not Unicode text"):
        store.save("eve\ud800", parse_keys(_key(4)))
    assert not (tmp_path / "keys").exists() or list((tmp_path / "keys").iterdir()) == []


def test_a_damaged_key_file_is_left_out_of_the_lookups_and_the_others_still_answer(tmp_path, caplog):
    store = KeyStore(str(tmp_path / "keys"))
    store.save("alice", parse_keys(_key(1)))
    store.save("bob", parse_keys(_key(2)))
    with open(store.path("bob"), "a") as f:
        f.write("this is no key\n")
    assert store.owners_of(_key(1)) == ["alice"]
    assert store.owners_of(_key(2)) == []
    assert "left out" in caplog.text


def test_key_index_answers_from_memory_and_follows_saves_and_removals(tmp_path):
    folder = tmp_path / "keys"
    KeyStore(str(folder)).save("alice", parse_keys(_key(1)))
    KeyStore(str(folder)).save("bob", parse_keys(f"{_key(1)}\n{_key(2)}"))
    index = KeyIndex(KeyStore(str(folder)))
    asyncio.run(index.ready())
    store = KeyStore(str(folder), index=index)
    assert index.owners_of(_key(1)) == ["alice", "bob"]
    folder.rename(tmp_path / "away")  # no file is read to answer: the files could be gone
    assert index.owners_of(_key(2, "with a comment")) == ["bob"]
    assert index.owners_of(_key(3)) == [] and index.owners_of("junk") == []
    (tmp_path / "away").rename(folder)
    store.save("alice", parse_keys(_key(3)))  # /hub/ssh
    assert index.owners_of(_key(1)) == ["bob"] and index.owners_of(_key(3)) == ["alice"]
    store.delete("bob")  # offboarding
    assert index.owners_of(_key(1)) == [] and index.owners_of(_key(2)) == []


def test_key_index_reads_the_files_once_in_a_thread_and_a_save_meanwhile_wins(tmp_path):
    folder = tmp_path / "keys"
    KeyStore(str(folder)).save("alice", parse_keys(_key(1)))
    reader, scans, read, go = KeyStore(str(folder)), [], threading.Event(), threading.Event()
    index = KeyIndex(reader)

    def slow_scan():
        scans.append(threading.current_thread())
        found = KeyStore.scan(reader)  # reads alice's old key ...
        read.set()
        go.wait(10)  # ... then alice saves a new one before the read is taken
        return found

    reader.scan = slow_scan

    async def lookups():
        first = [asyncio.ensure_future(index.ready()) for _ in range(5)]
        while not read.is_set():  # the event loop is free meanwhile
            await asyncio.sleep(0.01)
        KeyStore(str(folder), index=index).save("alice", parse_keys(_key(2)))
        go.set()
        await asyncio.gather(*first)

    asyncio.run(lookups())
    assert len(scans) == 1 and scans[0] is not threading.main_thread()
    assert index.owners_of(_key(2)) == ["alice"] and index.owners_of(_key(1)) == []

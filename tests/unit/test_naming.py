"""Names for containers, volumes and logins: valid, stable and distinct (tables)."""

from __future__ import annotations

import itertools
import re

import pytest

from devdock_spawner import naming

DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
LOGIN = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # what the image's entrypoint accepts

# (id, hub username, expected slug, expected login). Hash digits: the name's SHA-256, 32 hex digits in slugs and
# 20 in login names, written out as computed once by hand.
CASES = [
    ("plain", "alice", "alice", "alice"),
    ("digits", "bob42", "bob42", "bob42"),
    ("dash", "mary-jane", "mary-jane", "mary-jane"),
    ("upper", "Alice", "alice--3bc51062973c458d5a6f2d8d64a02324", "alice--3bc51062973c458d5a6f"),
    ("dot", "a.b", "a-b--2e7336dc8eba87ef472df568c35482ab", "a-b--2e7336dc8eba87ef472d"),
    (
        "email",
        "Zoë.Müller@example.org",
        "zoe-muller-example-org--5167b631e6f7e1f72ccc36d3f97d2ed7",
        "zoe-muller--5167b631e6f7e1f72ccc",
    ),
    ("system-account", "sshd", "sshd", "sshd--8b51ac5ca03b0a599e39"),
    ("root", "root", "root", "root--4813494d137e1631bba3"),
    ("leading-digit", "1abc", "1abc", "u1abc--57cb980e41933ae69e22"),
    ("leading-underscore", "_x", "x--a01e47cb4cec09633376c56bea646aee", "x--a01e47cb4cec09633376"),
    ("only-dashes", "--", "x--d8156bae0c4243d3742fc4e9774d8ace", "u--d8156bae0c4243d3742f"),
    ("cjk", "日本", "x--cf2abf0c5be326cb922a70f8163f9107", "u--cf2abf0c5be326cb922a"),
]


@pytest.mark.parametrize(("username", "slug", "login"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_slug_and_login_table(username, slug, login):
    assert naming.safe_slug(username) == slug
    assert naming.login_name(username) == login


HARD = [
    "alice",
    "Alice",
    "ALICE",
    "a.b",
    "a-b",
    "a_b",
    "a--b",
    "a b",
    "ünïcödé",
    "unicode",
    "日本",
    "中国",
    "x" * 200,
    "x" * 201,
    "y" * 31,
    "y" * 32,
    "y" * 33,
    "root",
    "Root",
    "admin",
    "1",
    "-",
    ".",
    "..",
    "../etc/passwd",
    "a;rm -rf /",
    "$(id)",
    "bob@example.org",
    "bob@example.com",
    "bob.example.org",
    "o'brien",
    "obrien",
    "🙂",
    "🙃",
    "tab\tname",
    "new\nline",
]


@pytest.mark.parametrize("username", HARD)
def test_hard_usernames_give_valid_names(username):
    slug = naming.safe_slug(username)
    login = naming.login_name(username)
    assert DOCKER_NAME.match(naming.object_name("devdock", slug)), slug
    assert DOCKER_NAME.match(naming.home_volume_name("devdock", slug, naming.safe_slug("srv"))), slug
    assert len(slug) <= naming.SLUG_MAX
    assert LOGIN.match(login), login
    assert login not in naming.RESERVED_LOGINS
    host = naming.hostname(slug)
    assert re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", host), host


def test_distinct_usernames_get_distinct_names():
    slugs = {naming.safe_slug(u) for u in HARD}
    logins = {naming.login_name(u) for u in HARD}
    assert len(slugs) == len(HARD)
    assert len(logins) == len(HARD)


def test_user_and_server_pairs_never_collide():
    users = ["a", "a-b", "a.b", "a-b--2e7336dc", "a-b--" + "0" * 32, "x"]
    servers = ["", "b", "2e7336dc", "gpu", "a-b"]
    names = [
        naming.object_name("devdock", naming.safe_slug(u), naming.safe_slug(s) if s else "")
        for u, s in itertools.product(users, servers)
    ]
    assert len(set(names)) == len(names)


def test_labels_identify_owner_server_and_version():
    labels = naming.labels(username="Zoë", server="gpu", login="zoe--x", version="1.2.3", extra={"k": 5})
    assert labels == {
        "io.devdock.managed": "true",
        "io.devdock.owner": "Zoë",
        "io.devdock.server": "gpu",
        "io.devdock.login": "zoe--x",
        "io.devdock.version": "1.2.3",
        "io.devdock.hub": "devdock",
        "k": "5",
    }


def test_slug_max_length_must_leave_room_for_the_hash():
    with pytest.raises(ValueError, match="at least"):
        naming.safe_slug("alice", max_length=5)


# (id, hub username, slug devdock 0.1 gave it): homes made then are found again through legacy_slug.
LEGACY = [
    ("safe-unchanged", "alice", "alice"),
    ("upper", "Alice", "alice--3bc51062"),
    ("email", "Zoë.Müller@example.org", "zoe-muller-example-org--5167b631"),
    ("cjk", "日本", "x--cf2abf0c"),
]


@pytest.mark.parametrize(("username", "old"), [c[1:] for c in LEGACY], ids=[c[0] for c in LEGACY])
def test_legacy_slug_is_the_name_devdock_0_1_gave(username, old):
    assert naming.legacy_slug(username) == old


def test_punctuation_no_longer_folds_users_together():
    """Names that fold to the same readable part: only the hash tells them apart, and it is 128 bits now."""
    folded = ["a.b", "a_b", "a+b", "a@b", "A.B", "a..b", "a b", "á.b"]
    slugs = [naming.safe_slug(u) for u in folded]
    assert {s.split("--")[0] for s in slugs} == {"a-b"}
    assert len(set(slugs)) == len(folded)
    assert all(len(s.split("--")[1]) == 32 for s in slugs)
    logins = [naming.login_name(u) for u in folded]
    assert len(set(logins)) == len(folded)
    assert all(len(x.split("--")[1]) == 20 for x in logins if x != "a_b")  # a_b is a valid login as it is


LOGIN_LABELS = [
    ("legacy-hashed", "alice--3bc51062", "alice--3bc51062"),
    ("plain", "alice", "alice"),
    ("reserved", "root", ""),
    ("shell-trick", "a;id", ""),
    ("too-long", "a" * 33, ""),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("label", "login"), [c[1:] for c in LOGIN_LABELS], ids=[c[0] for c in LOGIN_LABELS])
def test_login_read_back_from_a_label_is_checked(label, login):
    assert naming.checked_login(label) == login

"""Profiles and hostile user_options (tables)."""

from __future__ import annotations

import pytest

from devdock_spawner.gpu import GPU, GPUAllocator
from devdock_spawner.profiles import InvalidOptions, form_rows, load_profiles, validate_user_options

PROFILES = load_profiles(
    [
        {"slug": "cpu", "display_name": "Desktop", "default": True},
        {"slug": "gpu-1", "display_name": "1 GPU", "gpus": 1, "overrides": {"image": "devdock/desktop-cuda"}},
        {"slug": "lab-only", "display_name": "Vision lab", "gpus": "all", "allowed_groups": ["vision"]},
    ]
)

GOOD = [
    ("empty-means-default", {}, set(), "cpu"),
    ("none-means-default", None, set(), "cpu"),
    ("explicit", {"profile": "gpu-1"}, set(), "gpu-1"),
    ("group-profile", {"profile": "lab-only"}, {"vision"}, "lab-only"),
]


@pytest.mark.parametrize(("options", "groups", "slug"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_accepted_options(options, groups, slug):
    profile, clean = validate_user_options(options, PROFILES, groups)
    assert profile.slug == slug
    assert clean["profile"] == slug
    assert set(clean) == {"profile"}


BAD = [
    ("image-injection-CVE-2023-48311", {"image": "evil/root:latest"}, set(), "Unknown spawn option"),
    ("unknown-key", {"profile": "cpu", "privileged": True}, set(), "Unknown spawn option"),
    ("not-a-dict", ["cpu"], set(), "JSON object"),
    ("profile-number", {"profile": 3}, set(), "short name"),
    ("profile-list", {"profile": ["cpu"]}, set(), "short name"),
    ("profile-huge", {"profile": "x" * 10000}, set(), "short name"),
    ("profile-unknown", {"profile": "gpu-99"}, set(), "no profile 'gpu-99'"),
    ("profile-other-group", {"profile": "lab-only"}, {"physics"}, "no profile 'lab-only'"),
    ("profile-path-trick", {"profile": "../cpu"}, set(), "no profile"),
    # keys change only on the owner's /hub/ssh page, never through a token that may start a server
    ("keys-through-spawn-options", {"profile": "cpu", "ssh_keys": "ssh-ed25519 AAAA"}, set(), "/hub/ssh"),
    ("keys-not-text", {"ssh_keys": {"a": 1}}, set(), "/hub/ssh"),
]


@pytest.mark.parametrize(("options", "groups", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_refused_options(options, groups, message):
    with pytest.raises(InvalidOptions, match=message):
        validate_user_options(options, PROFILES, groups)


CONFIG_ERRORS = [
    ("unknown-key", [{"slug": "a", "gpu": 1}], "unknown keys"),
    ("bad-slug", [{"slug": "A B"}], "slug"),
    ("negative-gpus", [{"slug": "a", "gpus": -1}], "gpus must be"),
    ("absurd-gpus", [{"slug": "a", "gpus": 10_000}], "gpus must be"),
    ("bool-gpus", [{"slug": "a", "gpus": True}], "gpus must be"),
    ("override-not-allowed", [{"slug": "a", "overrides": {"privileged": True}}], "cannot override"),
    ("duplicate", [{"slug": "a"}, {"slug": "a"}], "duplicate"),
    ("not-a-dict", ["a"], "must be a dict"),
]


@pytest.mark.parametrize(("profile_list", "message"), [c[1:] for c in CONFIG_ERRORS], ids=[c[0] for c in CONFIG_ERRORS])
def test_profile_list_errors_name_the_problem(profile_list, message):
    with pytest.raises(ValueError, match=message):
        load_profiles(profile_list)


def test_default_profile_list_is_one_cpu_desktop():
    (profile,) = load_profiles([])
    assert profile.gpus == 0 and profile.slug == "desktop"


# The spawn form's rows from a real allocator of two GPUs, one of them held by ann's default server.
FORM_PROFILES = [
    {"slug": "cpu", "display_name": "Desktop"},
    {"slug": "gpu-1", "display_name": "1 GPU", "gpus": 1, "default": True},
    {"slug": "gpu-2", "display_name": "2 GPUs", "gpus": 2},
    {"slug": "pinned", "display_name": "GPU 1", "gpus": 1, "gpu_ids": ["GPU-0001"]},
]
# (id, the form is for, per-person cap, the last start's profile, {slug: (available, reason words)}, checked)
FORM_CASES = [
    (
        "another-person",
        "bob/",
        0,
        None,
        {"cpu": (True, ""), "gpu-1": (True, ""), "gpu-2": (False, "Not enough free"), "pinned": (True, "")},
        "gpu-1",
    ),
    (
        "same-person-past-the-cap",
        "ann/more",
        2,
        None,
        {"cpu": (True, ""), "gpu-1": (True, ""), "gpu-2": (False, "At most 2 GPUs per person"), "pinned": (True, "")},
        "gpu-1",
    ),
    (
        "last-choice-kept",
        "bob/",
        0,
        "pinned",
        {"cpu": (True, ""), "gpu-1": (True, ""), "gpu-2": (False, "Not enough free"), "pinned": (True, "")},
        "pinned",
    ),
    (
        "last-choice-cannot-start",
        "bob/",
        0,
        "gpu-2",
        {"cpu": (True, ""), "gpu-1": (True, ""), "gpu-2": (False, "Not enough free"), "pinned": (True, "")},
        "gpu-1",
    ),
]


@pytest.mark.parametrize(
    ("key", "cap", "chosen", "expected", "checked"), [c[1:] for c in FORM_CASES], ids=[c[0] for c in FORM_CASES]
)
def test_spawn_form_rows_say_what_can_start_and_why_not(key, cap, chosen, expected, checked):
    allocator = GPUAllocator([GPU(0, "GPU-0000", "T4"), GPU(1, "GPU-0001", "T4")], 1)
    allocator.allocate("ann/", 1)
    rows = form_rows(load_profiles(FORM_PROFILES), allocator, key, chosen, cap)
    for row in rows:
        available, words = expected[row["slug"]]
        assert row["available"] is available, row
        assert words in row["reason"] if words else row["reason"] == "", row
    assert [r["slug"] for r in rows if r["checked"]] == [checked]
    assert {r["slug"]: (r["free"], r["total"]) for r in rows if r["gpus"]} == {
        "gpu-1": (1, 2),
        "gpu-2": (1, 2),
        "pinned": (1, 1),
    }

"""What a user's server says about its activity, as the hub believes it (tables): only what can be true."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devdock_spawner.hub import _idle_text
from devdock_spawner.spawner_culling import UNKNOWN, Activity, read_activity

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STARTED = datetime(2026, 12, 1, 9, 0)  # as JupyterHub's database keeps it: UTC, without its zone


def answer(**fields) -> bytes:
    return json.dumps(fields).encode()


BELIEVED = [
    ("desktop-input", answer(last_activity="2026-12-01T11:48:00+00:00", last_activity_source="desktop input"),
     Activity(12 * 60, "desktop input")),
    ("another-zone", answer(last_activity="2026-12-01T13:48:00+02:00"), Activity(12 * 60, "")),
    ("a-little-ahead-of-the-hubs-clock", answer(last_activity="2026-12-01T12:00:30+00:00"), Activity(0, "")),
    ("since-the-start", answer(last_activity="2026-12-01T09:00:00+00:00", last_activity_source="start"),
     Activity(3 * 3600, "start")),
    ("a-source-that-is-not-a-plain-name", answer(last_activity="2026-12-01T11:59:00+00:00",
     last_activity_source="<script>alert(1)</script>"), Activity(60, "")),
    ("a-long-source", answer(last_activity="2026-12-01T11:59:00+00:00", last_activity_source="x" * 41),
     Activity(60, "")),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in BELIEVED], ids=[c[0] for c in BELIEVED])
def test_an_answer_that_can_be_true_is_believed(body, expected):
    assert read_activity(body, NOW, STARTED) == expected


NOT_BELIEVED = [
    ("not-json", b"<html>hello</html>"),
    ("empty", b""),
    ("not-utf8", b"\xff\xfe{"),
    ("a-list", b"[1, 2, 3]"),
    ("a-string", b'"2026-12-01T11:48:00+00:00"'),
    ("nothing-said", answer(last_activity_source="SSH")),
    ("not-a-time", answer(last_activity="yesterday")),
    ("a-number", answer(last_activity=1_764_590_000)),
    ("null", answer(last_activity=None)),
    ("no-zone", answer(last_activity="2026-12-01T11:48:00")),
    ("in-the-future", answer(last_activity="2026-12-01T12:05:00+00:00", last_activity_source="SSH")),
    ("far-future", answer(last_activity="9999-12-31T23:59:59+00:00")),
    ("before-the-server-started", answer(last_activity="2001-01-01T00:00:00+00:00")),
    ("a-long-string", answer(last_activity="2026-12-01T11:48:00+00:00" + " " * 100)),
    ("too-deep", b"[" * 100_000),
]


@pytest.mark.parametrize("body", [c[1] for c in NOT_BELIEVED], ids=[c[0] for c in NOT_BELIEVED])
def test_anything_else_is_unknown(body):
    assert read_activity(body, NOW, STARTED) == UNKNOWN


def test_without_a_known_start_only_the_future_is_refused():
    assert read_activity(answer(last_activity="2001-01-01T00:00:00+00:00"), NOW, None).idle_seconds > 0
    assert read_activity(answer(last_activity="2999-01-01T00:00:00+00:00"), NOW, None) == UNKNOWN


@pytest.mark.parametrize(
    ("activity", "text"),
    [
        (None, ""),  # not running: nothing asked
        (UNKNOWN, "unknown"),
        (Activity(12 * 60 + 5, "desktop input"), "12 min (desktop input)"),
        (Activity(3 * 3600 + 61, ""), "3 h 1 min"),
    ],
    ids=["not-running", "unknown", "minutes", "hours"],
)
def test_the_admin_page_says_unknown_for_what_is_not_believed(activity, text):
    assert _idle_text(activity) == text

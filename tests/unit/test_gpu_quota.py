"""GPU quotas (quota.py, pure): which rule applies to whom, the periods, the refusal and the form's words; the
used hours come from the accounting database (tests/unit/test_accounting.py) and the real hub's refusal is in
tests/integration/test_gpu_quota.py."""

from __future__ import annotations

from datetime import datetime

import pytest
from traitlets import TraitError
from traitlets.config import Config

from devdock_spawner import DevDockSpawner
from devdock_spawner.quota import InvalidQuota, check, left_words, period_start, refusal, rule_for
from tests.unit import fake_docker

QUOTAS = {
    "default": {"gpu_hours": 40, "period": "week", "gpus_at_once": 2},
    "groups": {
        "students": {"gpu_hours": 10, "period": "week", "gpus_at_once": 1},
        "lab": {"gpu_hours": 20, "period": "day"},
        "staff": {"gpus_at_once": 4},
    },
    "users": {"ana": {"gpu_hours": 200, "period": "month"}},
}


def test_gpu_quota_a_users_own_rule_wins_then_the_most_generous_group_then_the_default():
    assert rule_for(QUOTAS, "ana", {"students"}).source == "user"
    assert rule_for(QUOTAS, "bo", {"students"}).gpu_hours == 10
    assert rule_for(QUOTAS, "cy", {"students", "lab"}).source == "group lab"  # 20 a day beats 10 a week
    assert rule_for(QUOTAS, "di", {"lab", "staff"}).source == "group staff"  # no limit on hours beats any
    assert rule_for(QUOTAS, "ed", set()).source == "default"
    assert rule_for({"groups": {"students": {"gpu_hours": 1}}}, "fay", set()) is None  # no rule: no quota


def test_gpu_quota_periods_start_on_the_day_monday_and_the_first():
    now = datetime(2026, 12, 10, 15, 30)  # a Thursday
    assert period_start("day", now) == datetime(2026, 12, 10)
    assert period_start("week", now) == datetime(2026, 12, 7)
    assert period_start("month", now) == datetime(2026, 12, 1)


def test_gpu_quota_refusal_when_the_hours_are_used_up_and_the_words_on_the_form():
    rule = rule_for(QUOTAS, "bo", {"students"})
    now = datetime(2026, 12, 10, 15, 30)
    assert refusal(rule, 9.9 * 3600, 1, now) == ""
    words = refusal(rule, 10 * 3600, 1, now)
    assert "used 10 of the students group's 10 GPU-hours this week" in words
    assert "Monday 2026-12-14 00:00 UTC" in words
    assert refusal(rule, 10 * 3600, 0, now) == ""  # a start without GPUs is never refused for GPU-hours
    assert left_words(rule, 2.5 * 3600) == (
        "GPU-hours left this week: 7.5 of 10 (the students group's quota, at most 1 GPUs at once)."
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"defaults": {}},
        {"default": {"gpu_hours": -1}},
        {"default": {"gpu_hours": "10"}},
        {"default": {"period": "year"}},
        {"groups": {"x": {"gpus_at_once": 1.5}}},
        {"users": {"x": {"gpu_minutes": 3}}},
        {"users": {"x": 10}},
    ],
)
def test_gpu_quota_misconfigured_is_refused_with_a_sentence_at_configuration(bad):
    with pytest.raises(InvalidQuota):
        check(bad)
    with pytest.raises(TraitError, match="gpu_quotas"):
        fake_docker.make(DevDockSpawner, config=Config({"DevDockSpawner": {"gpu_quotas": bad}})).gpu_quotas  # noqa: B018

"""GPU reservations (reservation.py, pure): who may book, whether a booking fits, which servers a booking cuts short,
what a start must leave free during a window; the bookings' table (accounting.py) and the culler's stop at a
booking. The real hub's bookings are in tests/e2e/test_gpu_reservation_journey.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from traitlets import TraitError
from traitlets.config import Config

from devdock_spawner import DevDockSpawner, culler
from devdock_spawner.accounting import Ledger, end_reason
from devdock_spawner.reservation import (
    Booking,
    Holder,
    InvalidRules,
    booking_problem,
    check_rules,
    deadlines,
    from_zone,
    member_may_pass,
    must_leave_free,
    peak_booked,
    rule_for,
    to_zone,
    zone,
)
from tests.unit import fake_docker

NOW = datetime(2026, 12, 7, 12, 0)  # a Monday, naive UTC
RULES = {
    "groups": {"instructors": {"gpus": 4, "hours": 4}, "phd": {"gpus": 2, "hours": 8, "approval": True}},
    "default": {"gpus": 1, "hours": 2, "approval": True, "days_ahead": 7},
}


def at(hours: float) -> datetime:
    return NOW + timedelta(hours=hours)


def lab(start=2, end=4, count=2, group="ml-course", status="approved", id=1, kind="gpu") -> Booking:
    return Booking(id, "teacher", group, kind, count, at(start), at(end), status)


def holder(key, started_h, ends_h=None, units=1, groups=(), kind="gpu") -> Holder:
    user = key.partition("/")[0]
    return Holder(key, user, frozenset(groups), kind, units, at(started_h), None if ends_h is None else at(ends_h))


# --- who may book ---------------------------------------------------------------------------------------------------


def test_reservation_rules_admins_always_groups_most_generous_else_default_else_nobody():
    assert rule_for(RULES, set(), admin=True).source == "admin"
    assert rule_for(RULES, {"instructors", "phd"}, admin=False).source == "group instructors"  # no approval wins
    assert rule_for(RULES, {"phd"}, admin=False).approval is True
    assert rule_for(RULES, {"students"}, admin=False).source == "default"
    assert rule_for({"groups": {"instructors": {"gpus": 4, "hours": 4}}}, {"students"}, admin=False) is None


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ({"group": {}}, "unknown keys"),
        ({"default": {"gpus": 0, "hours": 1}}, "gpus of default"),
        ({"default": {"gpus": True, "hours": 1}}, "gpus of default"),
        ({"groups": {"x": {"gpus": 1, "hours": 0}}}, "hours of group x"),
        ({"groups": {"x": {"gpus": 1, "hours": 1, "approval": "yes"}}}, "approval of group x"),
        ({"default": {"gpus": 1, "hours": 1, "days_ahead": 0}}, "days_ahead of default"),
        ({"default": {"gpus": 1, "hours": 1, "when": "now"}}, "unknown keys"),
    ],
)
def test_reservation_rules_misconfigured_are_refused_with_a_sentence(rules, words):
    with pytest.raises(InvalidRules, match=words):
        check_rules(rules)


def test_reservation_rules_misconfigured_stop_the_hub_at_its_configuration():
    bad = Config({"DevDockSpawner": {"gpu_reservation_rules": {"default": {"gpus": -1}}}})
    with pytest.raises(TraitError, match="gpu_reservation_rules"):
        fake_docker.make(DevDockSpawner, config=bad).gpu_reservation_rules  # noqa: B018
    bad = Config({"DevDockSpawner": {"gpu_reservation_timezone": "Mars/Olympus"}})
    with pytest.raises(TraitError, match="not a known time zone"):
        fake_docker.make(DevDockSpawner, config=bad).gpu_reservation_timezone  # noqa: B018
    good = Config({"DevDockSpawner": {"gpu_reservation_rules": RULES, "gpu_reservation_timezone": "Europe/Berlin"}})
    assert fake_docker.make(DevDockSpawner, config=good).gpu_reservation_rules == RULES


# --- whether a booking fits -----------------------------------------------------------------------------------------


def problem(new: Booking, existing=(), groups=frozenset({"ml-course"}), rule_groups=("instructors",), total=4):
    rule = rule_for(RULES, set(rule_groups), admin=False)
    return booking_problem(new, list(existing), {"gpu": total}, rule, set(groups), NOW)


def test_reservation_a_booking_within_the_rule_and_the_free_gpus_fits():
    assert problem(lab()) == ""


@pytest.mark.parametrize(
    ("new", "kwargs", "words"),
    [
        (lab(count=5), {}, "At most 4 GPUs"),
        (lab(count=0), {}, "at least one"),
        (lab(start=2, end=7), {}, "at most 4 hours"),
        (lab(start=4, end=2), {}, "end after it starts"),
        (lab(start=-1, end=1), {}, "in the past"),
        (lab(start=24 * 30, end=24 * 30 + 1), {}, "28 days ahead"),
        (lab(group="other-course"), {}, "a group you belong to"),
        (lab(kind="3g.40gb"), {}, "no GPUs of the kind"),
        (lab(count=3), {"existing": [lab(start=3, end=5, count=2, id=2)]}, "Only 2 of the 4"),
        (lab(), {"rule_groups": ()}, "this hub's default"),  # the default allows one GPU
        (lab(count=1), {"rule_groups": (), "groups": ()}, "a group you belong to"),
    ],
)
def test_reservation_a_booking_past_the_rule_or_the_gpus_is_refused_with_a_sentence(new, kwargs, words):
    assert words in problem(new, **kwargs)


def test_reservation_nobody_without_a_rule_may_book():
    assert "may not book" in booking_problem(lab(), [], {"gpu": 4}, None, {"ml-course"}, NOW)


def test_reservation_pending_bookings_count_for_the_peak_rejected_ones_do_not():
    existing = [lab(start=1, end=3, count=2, id=2, status="pending"), lab(start=3, end=5, count=1, id=3)]
    assert peak_booked(existing, "gpu", at(2), at(4)) == 2  # 2 from 2-3, 1 from 3-4: never 3 at once
    existing.append(lab(start=2.5, end=3.5, count=1, id=4, status="rejected"))
    assert peak_booked(existing, "gpu", at(2), at(4)) == 2
    existing.append(lab(start=2.5, end=3.5, count=1, id=5, status="approved"))
    assert peak_booked(existing, "gpu", at(2), at(4)) == 3


# --- what a booking asks of others ----------------------------------------------------------------------------------


def test_reservation_cuts_short_the_newest_outsider_server_that_would_hold_a_booked_gpu_at_the_start():
    holders = [holder("old/", -5), holder("new/", -1)]  # both GPUs held, no time limit
    cut = deadlines([lab(count=1)], holders, {"gpu": 2}, NOW)
    assert list(cut) == ["new/"] and cut["new/"][0] == at(2)
    # Control: with a GPU free at the start, nobody is cut.
    assert deadlines([lab(count=1)], holders[:1], {"gpu": 2}, NOW) == {}


def test_reservation_spares_servers_that_end_before_the_start_and_the_groups_own_members():
    holders = [holder("early/", -5, ends_h=1), holder("member/", -1, groups={"ml-course"}), holder("other/", -2)]
    cut = deadlines([lab(count=2)], holders, {"gpu": 3}, NOW)
    assert cut == {}  # early frees its GPU at 1; member uses one of the two booked: 2 held + 1 unused = 3
    cut = deadlines([lab(count=2)], [*holders, holder("late/", -0.5)], {"gpu": 3}, NOW)
    assert list(cut) == ["late/"]


def test_reservation_a_booking_under_way_cuts_servers_at_its_start_time_so_they_stop_now():
    cut = deadlines([lab(start=-1, end=1, count=1)], [holder("a/", -3), holder("b/", -2)], {"gpu": 2}, NOW)
    assert cut == {"b/": (at(-1), lab(start=-1, end=1, count=1))}


def test_reservation_pending_bookings_cut_nobody():
    assert deadlines([lab(count=2, status="pending")], [holder("a/", -1)], {"gpu": 2}, NOW) == {}


def test_reservation_during_the_window_others_must_leave_the_unused_booked_gpus_free():
    on = [lab(start=-1, end=1, count=2)]
    holders = [holder("m1/", -0.5, groups={"ml-course"})]  # one member uses one booked GPU
    assert must_leave_free(on, holders, NOW, "gpu", "outsider", set(), 1) == 1
    # A member's start uses the booking's last unused GPU: nothing more to keep, and it passes the line.
    assert must_leave_free(on, holders, NOW, "gpu", "m2", {"ml-course"}, 1) == 0
    assert member_may_pass(on, holders, NOW, "gpu", "m2", {"ml-course"}, 1)
    # Asking for two, a member takes one booked and one general GPU: not only booked ones, so it keeps its place.
    assert not member_may_pass(on, holders, NOW, "gpu", "m2", {"ml-course"}, 2)
    assert not member_may_pass(on, holders, NOW, "gpu", "outsider", set(), 1)
    # After the window nothing is kept.
    assert must_leave_free(on, holders, at(1), "gpu", "outsider", set(), 1) == 0


def test_reservation_a_booking_for_one_person_is_theirs_alone():
    mine = Booking(1, "ana", "", "gpu", 1, at(-1), at(1))
    assert mine.is_member("ana", set()) and not mine.is_member("bo", {"ml-course"})
    assert mine.whom == "ana" and lab().whom == "the group ml-course"


# --- time zones -----------------------------------------------------------------------------------------------------


def test_reservation_times_are_entered_in_the_hubs_zone_and_kept_in_utc(monkeypatch):
    berlin = zone("Europe/Berlin")
    assert from_zone(datetime(2026, 12, 8, 14, 0), berlin) == datetime(2026, 12, 8, 13, 0)  # CET = UTC+1
    assert from_zone(datetime(2026, 7, 7, 14, 0), berlin) == datetime(2026, 7, 7, 12, 0)  # CEST = UTC+2
    assert to_zone(datetime(2026, 12, 8, 13, 0), berlin).hour == 14
    monkeypatch.setenv("TZ", "America/New_York")
    assert str(zone("")) == "America/New_York"
    monkeypatch.delenv("TZ")
    assert zone("") is UTC


# --- the table, the culler, the accounting --------------------------------------------------------------------------


def test_reservation_bookings_are_kept_in_the_accounting_database(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/a.sqlite")
    first = ledger.book(lab(status="pending"))
    ledger.book(lab(start=30, end=31, id=0))
    assert [b.id for b in ledger.bookings(NOW)] == [first.id, first.id + 1]
    assert [b.id for b in ledger.bookings(NOW, at(24))] == [first.id]  # the week view's window
    ledger.decide(first.id, "approved", "admin")
    assert ledger.booking(first.id).status == "approved"
    ledger.decide(first.id, "cancelled", "teacher")
    assert [b.id for b in Ledger(f"sqlite:///{tmp_path}/a.sqlite").bookings(NOW)] == [first.id + 1]  # reopened


def test_reservation_the_culler_stops_a_server_at_its_bookings_start_and_the_run_ends_for_it():
    now = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    why = "a GPU reservation for the group ml-course starts at Mon 14:00 UTC and needs its GPU"
    policy = culler.Policy(deadlines={"ana/": (now.isoformat(), why)})
    server = {"full_name": "ana/", "user_options": {}}
    policy = culler.Policy.from_json(policy.to_json())  # as the culler gets it
    assert culler.decide(server, timedelta(0), timedelta(minutes=5), policy, now) == (True, why)
    assert culler.decide(server, timedelta(0), timedelta(minutes=5), policy, now - timedelta(seconds=1))[0] is False
    assert culler.decide({**server, "full_name": "bo/"}, timedelta(0), timedelta(minutes=5), policy, now)[0] is False
    assert end_reason({"reason": why}) == "reservation"


# --- what the review found: notice, one user's share of the bookings, admins, the warning time before a window ----


def test_reservation_a_window_starts_after_the_servers_warning_time_so_cut_servers_are_warned_first():
    rule = rule_for(RULES, {"instructors"}, admin=False)
    soon = Booking(1, "teacher", "ml-course", "gpu", 1, NOW + timedelta(minutes=5), at(1))
    assert "at least 10 minutes from now" in booking_problem(soon, [], {"gpu": 4}, rule, {"ml-course"}, NOW, 600)
    assert booking_problem(soon, [], {"gpu": 4}, rule, {"ml-course"}, NOW, 60) == ""
    admin = rule_for(RULES, set(), admin=True)  # admins too: the servers' users are warned all the same
    assert "at least 10 minutes" in booking_problem(soon, [], {"gpu": 4}, admin, set(), NOW, 600)


def test_reservation_one_user_holds_few_bookings_and_pending_ones_do_not_hold_up_an_admin():
    rule = rule_for(RULES, {"phd"}, admin=False)
    mine = [Booking(i, "stu", "", "gpu", 1, at(24 * i), at(24 * i + 1), "pending") for i in range(1, 4)]
    new = Booking(9, "stu", "", "gpu", 1, at(100), at(101), "pending")
    assert "You hold 3 bookings already" in booking_problem(new, mine, {"gpu": 4}, rule, set(), NOW)
    assert booking_problem(new, mine[:2], {"gpu": 4}, rule, set(), NOW) == ""
    with pytest.raises(InvalidRules, match="open of default"):
        check_rules({"default": {"gpus": 1, "hours": 1, "open": 0}})
    # A week filled with one student's pending bookings: others are refused, an admin is not.
    pending = [Booking(1, "stu", "", "gpu", 4, at(2), at(4), "pending")]
    lab_ = lab(count=1)
    assert "Only 0 of the 4" in problem(lab_, pending)
    assert booking_problem(lab_, pending, {"gpu": 4}, rule_for(RULES, set(), admin=True), set(), NOW) == ""


def test_reservation_from_the_warning_time_before_a_window_others_leave_the_booked_gpus_free():
    soon = [lab(start=0.1, end=2, count=1)]  # starts in 6 minutes
    assert must_leave_free(soon, [], NOW, "gpu", "outsider", set(), 1) == 0  # not yet on
    assert must_leave_free(soon, [], NOW, "gpu", "outsider", set(), 1, ahead=600) == 1  # a start now would be cut
    assert member_may_pass(soon, [], NOW, "gpu", "cat", {"ml-course"}, 1, ahead=600)


def test_reservation_bookable_gpus_leave_out_those_out_of_the_pool_those_also_split_and_shared_hubs():
    from types import SimpleNamespace

    from devdock_spawner.gpu import GPU, GPUAllocator
    from devdock_spawner.hubwide_reservations import Reservations

    whole = [GPU(i, f"GPU-{i}") for i in range(3)]
    mig = [GPU(3, "GPU-3"), GPU(3, "MIG-3a", parent="GPU-3", mig_profile="1g.10gb")]
    hub = SimpleNamespace(allocator=GPUAllocator(whole), settings=SimpleNamespace(gpu_max_users_per_gpu=1))
    assert Reservations.booking_totals(hub) == {"gpu": 3}
    hub.allocator.set_unhealthy({"GPU-1": "XID 79"})
    assert Reservations.booking_totals(hub) == {"gpu": 2}
    hub.allocator = GPUAllocator([*whole, *mig])  # GPU 3 handed out whole and as slices: neither kind is bookable
    assert Reservations.booking_totals(hub) == {}
    hub.allocator, hub.settings.gpu_max_users_per_gpu = GPUAllocator(whole), 2
    assert Reservations.booking_totals(hub) == {}

"""GPU reservations (pure logic): who may book GPUs for a window, whether a booking fits, and what it asks of others.

A booking keeps ``count`` GPUs of one kind (whole GPUs, or the MIG slices of one profile) for the members of a
JupyterHub group (or for the booker alone) from ``start`` to ``end`` — a lab session on Tuesday 14:00-16:00 for the
group ``ml-course``. ``DevDockSpawner.gpu_reservation_rules`` says who may book how much::

    {"groups": {"instructors": {"gpus": 8, "hours": 4}},
     "default": {"gpus": 1, "hours": 2, "approval": True, "days_ahead": 7}}

Admins may always book, for anyone, without approval; the most generous of a user's group rules applies, else
the default; no rule: only admins book. A rule with ``"approval": True`` makes bookings wait for an admin.

What an approved booking does (the hub object applies it; this module decides):

- **before its start** (:func:`deadlines`): GPU servers that would still hold the booked GPUs at the start are cut
  short to end then, warned like any time limit; the server that started last goes first, and servers of the
  booking's own members are never cut for it;
- **during the window** (:func:`must_leave_free`), and from the servers' warning time before it: a start by anyone
  else must leave the booked GPUs that no member uses free, so it waits in line (or is refused) while only booked
  GPUs are free; members take their booked GPUs before anyone waiting in line for that kind.
- a booking starts at least the servers' warning time ahead (``notice``), so that the servers it cuts are warned.

Times are naive UTC (as the accounting database keeps them); pages show them in the hub's time zone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

STATUSES = ("pending", "approved", "rejected", "cancelled")
#: The rule of admins: any number of GPUs, any length, up to a year ahead, no approval.
ADMIN_DAYS_AHEAD = 366


class InvalidRules(ValueError):
    pass


@dataclass(frozen=True)
class BookingRule:
    """What one user may book: at most ``gpus`` at once in a booking, ``hours`` long, ``days_ahead`` ahead."""

    gpus: int
    hours: float
    approval: bool = False
    days_ahead: int = 28
    source: str = "default"  # "default", "group <name>", "admin"
    #: bookings one user may hold at once (pending or approved, not yet over): one student cannot fill the week
    open: int = 3


def _rule(entry: object, source: str) -> BookingRule:
    if not isinstance(entry, dict):
        raise InvalidRules(f"the booking rule of {source} must be a dict, not {entry!r}")
    unknown = set(entry) - {"gpus", "hours", "approval", "days_ahead", "open"}
    if unknown:
        raise InvalidRules(f"the booking rule of {source} has unknown keys {sorted(unknown)}")
    gpus, hours = entry.get("gpus"), entry.get("hours")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise InvalidRules(f"gpus of {source} must be a whole number >= 1")
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= 24 * 14:
        raise InvalidRules(f"hours of {source} must be a number of hours above 0 (at most two weeks)")
    approval = entry.get("approval", False)
    if not isinstance(approval, bool):
        raise InvalidRules(f"approval of {source} must be True or False")
    ahead = entry.get("days_ahead", 28)
    if isinstance(ahead, bool) or not isinstance(ahead, int) or not 1 <= ahead <= ADMIN_DAYS_AHEAD:
        raise InvalidRules(f"days_ahead of {source} must be a whole number of days from 1 to {ADMIN_DAYS_AHEAD}")
    open_ = entry.get("open", 3)
    if isinstance(open_, bool) or not isinstance(open_, int) or open_ < 1:
        raise InvalidRules(f"open of {source} must be a whole number >= 1 (bookings a user may hold at once)")
    return BookingRule(gpus, float(hours), approval, ahead, source, open_)


def check_rules(rules: dict) -> None:
    """Raise :class:`InvalidRules` with a sentence for a misconfigured ``gpu_reservation_rules``."""
    unknown = set(rules) - {"default", "groups"}
    if unknown:
        raise InvalidRules(f"gpu_reservation_rules has unknown keys {sorted(unknown)} (default, groups)")
    if "default" in rules:
        _rule(rules["default"], "default")
    for name, entry in (rules.get("groups") or {}).items():
        _rule(entry, f"group {name}")


def rule_for(rules: dict, groups: set[str], admin: bool) -> BookingRule | None:
    """The booking rule of a user in ``groups``; None: they may not book."""
    if admin:
        return BookingRule(gpus=10**6, hours=math.inf, days_ahead=ADMIN_DAYS_AHEAD, source="admin", open=10**6)
    check_rules(rules)
    found = [_rule(e, f"group {g}") for g, e in (rules.get("groups") or {}).items() if g in groups]
    if found:
        return max(found, key=lambda r: (not r.approval, r.gpus * r.hours, r.days_ahead))
    if "default" in rules:
        return _rule(rules["default"], "default")
    return None


@dataclass(frozen=True)
class Booking:
    """``count`` GPUs of ``kind`` for the members of ``group`` (or for ``by`` alone when ``group`` is empty)."""

    id: int
    by: str
    group: str
    kind: str
    count: int
    start: datetime
    end: datetime
    status: str = "approved"
    note: str = ""

    def holds(self, at: datetime, ahead: float = 0) -> bool:
        """Approved, and its window is on at ``at`` (or starts within ``ahead`` seconds)."""
        return self.status == "approved" and self.start - timedelta(seconds=ahead) <= at < self.end

    def is_member(self, user: str, groups: Iterable[str]) -> bool:
        return self.group in groups if self.group else user == self.by

    @property
    def whom(self) -> str:
        return f"the group {self.group}" if self.group else self.by


def booking_problem(
    new: Booking,
    existing: Iterable[Booking],
    totals: dict[str, int],
    rule: BookingRule | None,
    booker_groups: set[str],
    now: datetime,
    notice: float = 0,
) -> str:
    """Why ``new`` cannot be booked, in the booker's words ("" when it can).

    ``existing``: the other bookings not yet over (pending ones count, so that an approval does not find the GPUs
    taken twice; an admin's booking is not held up by others' pending ones, which are checked again at approval).
    ``totals``: the hub's units of each kind. ``notice``: seconds a booking must start ahead at the least, so that
    the servers it cuts short are warned first (the servers' ``cull_warning``).
    """
    existing = list(existing)
    if rule is None:
        return "You may not book GPUs on this hub: ask an admin (or an instructor) to book them for your group."
    total = totals.get(new.kind, 0)
    if total < 1:
        return f"This hub has no GPUs of the kind {new.kind!r} to book."
    if new.count < 1:
        return "Book at least one GPU."
    if new.count > min(total, rule.gpus):
        return f"At most {min(total, rule.gpus)} GPUs of this kind can be booked at once ({_rule_words(rule)})."
    if new.end <= new.start:
        return "The window must end after it starts."
    if new.start < now + timedelta(seconds=notice):
        minutes = math.ceil(notice / 60)
        return (
            f"The window must start at least {minutes} minute{'s' if minutes != 1 else ''} from now, so that servers "
            "on those GPUs are warned first."
            if notice
            else "The window must not start in the past."
        )
    hours = (new.end - new.start).total_seconds() / 3600
    if hours > rule.hours:
        return f"A booking may last at most {rule.hours:g} hours ({_rule_words(rule)}); this one lasts {hours:.3g}."
    if new.start > now + timedelta(days=rule.days_ahead):
        return f"Bookings may start at most {rule.days_ahead} days ahead ({_rule_words(rule)})."
    if new.group and rule.source != "admin" and new.group not in booker_groups:
        return f"You may book only for yourself or for a group you belong to (you are not in {new.group!r})."
    mine = sum(1 for b in existing if b.by == new.by and b.status in ("pending", "approved") and b.end > now)
    if mine >= rule.open:
        return f"You hold {mine} bookings already, the most {_rule_words(rule)} allows: cancel one first."
    counted = [b for b in existing if b.status == "approved"] if rule.source == "admin" else existing
    taken = peak_booked(counted, new.kind, new.start, new.end)
    if taken + new.count > total:
        return (
            f"Only {max(0, total - taken)} of the {total} GPUs of this kind are left to book at some time in this "
            "window (see the week's bookings): book fewer, or another time."
        )
    return ""


def _rule_words(rule: BookingRule) -> str:
    return "this hub's default for bookings" if rule.source == "default" else f"the rule of the {rule.source}"


def peak_booked(bookings: Iterable[Booking], kind: str, start: datetime, end: datetime) -> int:
    """The most units of ``kind`` that pending and approved bookings keep at one time within ``[start, end)``."""
    overlapping = [
        b
        for b in bookings
        if b.kind == kind and b.status in ("pending", "approved") and b.start < end and start < b.end
    ]
    # The peak of a sum of windows is at one of their starts (or at ``start``).
    instants = {start} | {b.start for b in overlapping if b.start > start}
    return max((sum(b.count for b in overlapping if b.start <= t < b.end) for t in instants), default=0)


@dataclass(frozen=True)
class Holder:
    """A running server that holds units of ``kind``: its owner, since when, and its end (None: no time limit)."""

    key: str
    user: str
    groups: frozenset[str]
    kind: str
    units: int
    started: datetime
    ends: datetime | None = None

    def alive_at(self, at: datetime) -> bool:
        return self.ends is None or self.ends > at


def unused_booked(
    bookings: Iterable[Booking], holders: Iterable[Holder], at: datetime, kind: str, ahead: float = 0
) -> int:
    """Units of ``kind`` booked for ``at`` (or from ``ahead`` seconds later) that none of their members uses then
    (each unit counts once)."""
    active = sorted((b for b in bookings if b.kind == kind and b.holds(at, ahead)), key=lambda b: (b.start, b.id))
    left = {b.id: b.count for b in active}
    for holder in sorted((h for h in holders if h.kind == kind and h.alive_at(at)), key=lambda h: h.started):
        units = holder.units
        for booking in active:
            if units and left[booking.id] and booking.is_member(holder.user, holder.groups):
                took = min(units, left[booking.id])
                left[booking.id] -= took
                units -= took
    return sum(left.values())


def must_leave_free(bookings: Iterable[Booking], holders: list[Holder], now: datetime, kind: str, user: str,
                    groups: set[str], units: int, ahead: float = 0) -> int:  # fmt: skip
    """How many units of ``kind`` a start of ``units`` by ``user`` must leave free now: the booked units no member
    uses, after this start (a member's start uses its booking's units first). ``ahead``: bookings count that many
    seconds before their start (a start then would be cut short at once)."""
    start = Holder("", user, frozenset(groups), kind, units, now)
    return unused_booked(bookings, [*holders, start], now, kind, ahead)


def member_may_pass(bookings: Iterable[Booking], holders: list[Holder], now: datetime, kind: str, user: str,
                    groups: set[str], units: int, ahead: float = 0) -> bool:  # fmt: skip
    """Whether this start takes only units booked for it now (then it goes before the line for that kind)."""
    bookings = list(bookings)
    before = unused_booked(bookings, holders, now, kind, ahead)
    after = must_leave_free(bookings, holders, now, kind, user, groups, units, ahead)
    return units > 0 and before - after == units


def deadlines(
    bookings: Iterable[Booking], holders: list[Holder], totals: dict[str, int], now: datetime
) -> dict[str, tuple[datetime, Booking]]:
    """The servers a booking cuts short: ``{key: (when it must stop, the booking)}``.

    At each approved booking's start, the units still held then plus the booked units no member uses then must fit
    in the kind's total; while they do not, the server of someone outside every booking of that time that started
    last ends at the booking's start. A booking already under way asks it of the servers running now.
    """
    bookings = [b for b in bookings if b.status == "approved" and b.end > now]
    ends = {h.key: h.ends for h in holders}
    cut: dict[str, tuple[datetime, Booking]] = {}
    for booking in sorted(bookings, key=lambda b: (b.start, b.id)):
        at = max(booking.start, now)
        alive = [
            Holder(h.key, h.user, h.groups, h.kind, h.units, h.started, ends[h.key])
            for h in holders
            if h.kind == booking.kind and (ends[h.key] is None or ends[h.key] > at)
        ]
        held = sum(h.units for h in alive)
        need = unused_booked(bookings, alive, at, booking.kind)
        on = [b for b in bookings if b.kind == booking.kind and b.holds(at)]
        outsiders = sorted(
            (h for h in alive if not any(b.is_member(h.user, h.groups) for b in on)),
            key=lambda h: (h.started, h.key),
        )
        while held + need > totals.get(booking.kind, 0) and outsiders:
            last = outsiders.pop()
            ends[last.key] = booking.start
            cut[last.key] = (booking.start, booking)
            held -= last.units
    return cut


def week_of(day: datetime) -> tuple[datetime, datetime]:
    """The Monday 00:00 before ``day`` and the Monday after it (both in ``day``'s own clock)."""
    monday = day.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=7)


# --- time zones: bookings are entered and shown in the hub's zone, kept in naive UTC ---------------------------------


def zone(name: str = "") -> tzinfo:
    """The zone called ``name`` (an IANA name such as ``Europe/Berlin``), else the hub's ``TZ``, else UTC."""
    for candidate in (name, os.environ.get("TZ", "").lstrip(":")):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                if candidate == name:
                    raise InvalidRules(f"gpu_reservation_timezone {name!r} is not a known time zone") from None
    return UTC


def to_zone(when: datetime, where: tzinfo) -> datetime:
    """A naive UTC time in ``where``."""
    return when.replace(tzinfo=UTC).astimezone(where)


def from_zone(local: datetime, where: tzinfo) -> datetime:
    """A wall-clock time in ``where`` (naive) as naive UTC."""
    return local.replace(tzinfo=where).astimezone(UTC).replace(tzinfo=None)

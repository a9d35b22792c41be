"""The GPU bookings page, ``/hub/devdock/reservations``: the week's bookings, a form to book, admins' decisions.

Everyone logged in sees the week's bookings (who, which GPUs, when; ``?week=YYYY-MM-DD`` for another week,
``?format=json`` for scripts). Who may book how much is ``gpu_reservation_rules`` (reservation.py); admins book
for anyone without approval, and approve or reject pending bookings; a booker cancels their own. Times are entered
and shown in ``gpu_reservation_timezone``. Every change is a POST with the hub's XSRF token.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from jupyterhub import orm
from jupyterhub.handlers import BaseHandler
from tornado import web

from . import hubwide, reservation
from .accounting import utc_now
from .gpu import WHOLE
from .reservation import Booking

#: The longest free-text note on a booking.
NOTE_MAX = 200


def kind_words(kind: str, count: int = 2) -> str:
    """``kind`` in words, for ``count`` of them ("1 whole GPU", "2 MIG 1g.10gb slices")."""
    plural = "" if count == 1 else "s"
    return f"whole GPU{plural}" if kind == WHOLE else f"MIG {kind} slice{plural}"


#: The years the page takes dates in.
YEARS = (2000, 2100)


class BadTime(ValueError):
    """A date and time the booking form cannot take, in the booker's words."""


def _local_time(text: str, zone) -> datetime:
    """A wall-clock time typed in the hub's zone (``YYYY-MM-DDTHH:MM[:SS]``) as naive UTC."""
    local = datetime.fromisoformat(text)
    if local.tzinfo is not None:
        raise BadTime(f"Give times without a zone: they are {zone}.")
    if not YEARS[0] <= local.year <= YEARS[1]:
        raise BadTime(f"Give a date from {YEARS[0]} to {YEARS[1]}.")
    utc = reservation.from_zone(local, zone)
    if reservation.to_zone(utc, zone).replace(tzinfo=None) != local:
        raise BadTime(f"{text} does not exist in {zone} (the clocks change then): give another time.")
    return utc


class ReservationsHandler(BaseHandler):
    async def _context(self):
        user = self.current_user
        spawner = user.spawners[""]  # makes the hub-wide object if no server has yet (a fresh hub)
        hub = hubwide.current()
        if hub is None or hub.ledger is None or not hub.gpu_line:
            return None, spawner, {}
        try:
            await hub.gpu_allocator()
        except web.HTTPError as e:
            self.log.warning("devdock: the GPUs cannot be listed for bookings: %s", e.log_message)
        return hub, spawner, hub.booking_totals()

    def _zone(self, spawner):
        return reservation.zone(spawner.gpu_reservation_timezone)

    def _rule(self, spawner) -> reservation.BookingRule | None:
        user = self.current_user
        return reservation.rule_for(spawner.gpu_reservation_rules, {g.name for g in user.groups}, user.admin)

    @web.authenticated
    async def get(self):
        await self._page()

    async def _page(self, problem: str = "", form: dict | None = None, status: int = 200):
        hub, spawner, totals = await self._context()
        zone = self._zone(spawner)
        now_local = reservation.to_zone(utc_now(), zone).replace(tzinfo=None)
        try:
            day = (
                datetime.strptime(self.get_argument("week", ""), "%Y-%m-%d")
                if self.get_argument("week", "")
                else now_local
            )
            if not YEARS[0] <= day.year <= YEARS[1]:
                raise ValueError(day.year)
        except ValueError:
            raise web.HTTPError(400, f"week must be a date, YYYY-MM-DD, from {YEARS[0]} to {YEARS[1]}") from None
        monday, next_monday = reservation.week_of(day)
        bookings = []
        if hub is not None:
            since, until = reservation.from_zone(monday, zone), reservation.from_zone(next_monday, zone)
            bookings = hub.ledger.bookings(since, until)
        rows = [self._row(b, zone, monday) for b in bookings]
        if self.get_argument("format", "html") == "json":
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"week": f"{monday:%Y-%m-%d}", "timezone": str(zone), "bookings": rows}))
            return
        user = self.current_user
        rule = self._rule(spawner)
        self.set_status(status)
        html = await self.render_template(
            "devdock_reservations.html",
            enabled=hub is not None,
            totals=totals,
            kind_words=kind_words,
            days=[
                (monday + timedelta(days=i), [r for r in rows if r["day"] == f"{monday + timedelta(days=i):%Y-%m-%d}"])
                for i in range(7)
            ],
            monday=monday,
            previous_week=f"{monday - timedelta(days=7):%Y-%m-%d}",
            next_week=f"{next_monday:%Y-%m-%d}",
            zone=str(zone),
            rule=rule,
            admin=user.admin,
            groups=sorted(g.name for g in (self.db.query(orm.Group) if user.admin else user.groups)),
            problem=problem,
            form=form or {},
            booked=self.get_argument("booked", ""),
            xsrf=self.xsrf_token.decode("ascii"),
        )
        self.finish(html)

    def _row(self, booking: Booking, zone, monday: datetime) -> dict:
        start, end = reservation.to_zone(booking.start, zone), reservation.to_zone(booking.end, zone)
        shown_on = max(start.replace(tzinfo=None), monday)  # one that began last week shows on Monday
        user = self.current_user
        return {
            "id": booking.id,
            "by": booking.by,
            "group": booking.group,
            "for": booking.whom,
            "kind": booking.kind,
            "count": booking.count,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "day": f"{shown_on:%Y-%m-%d}",
            "when": (f"{start:%H:%M}" if start.date() == shown_on.date() else f"from {start:%a %d %H:%M}")
            + f"–{end:%H:%M}"
            + ("" if end.date() == shown_on.date() else f" ({end:%a %d})"),
            "status": booking.status,
            "note": booking.note,
            "mine": booking.by == user.name,
            "member": booking.is_member(user.name, {g.name for g in user.groups}),
        }

    @web.authenticated
    async def post(self):
        action = self.get_body_argument("action", "")
        if action == "book":
            await self._book()
            return
        try:
            booking_id = int(self.get_body_argument("id", ""))
        except ValueError:
            raise web.HTTPError(400, "id must be a booking's number") from None
        hub, spawner, totals = await self._context()
        if hub is None:
            raise web.HTTPError(404, "GPU bookings are off on this hub")
        booking = hub.ledger.booking(booking_id)
        user = self.current_user
        if booking is None or booking.status not in ("pending", "approved"):
            raise web.HTTPError(404, f"No open booking {booking_id}")
        if action == "cancel" and (user.admin or booking.by == user.name):
            hub.ledger.decide(booking_id, "cancelled", user.name)
        elif action in ("approve", "reject") and user.admin and booking.status == "pending":
            if action == "approve" and booking.start < utc_now() + timedelta(seconds=hub.settings.cull_warning):
                await self._page(f"Booking {booking_id} starts too soon to approve: the servers it would stop could "
                                 "not be warned first. Reject it, and book a later window.", None, 409)  # fmt: skip
                return
            if action == "approve":
                others = [b for b in hub.ledger.bookings(booking.start, booking.end) if b.id != booking_id]
                taken = reservation.peak_booked([b for b in others if b.status == "approved"], booking.kind,
                                                booking.start, booking.end)  # fmt: skip
                if taken + booking.count > totals.get(booking.kind, 0):
                    await self._page(f"Booking {booking_id} no longer fits: other bookings keep those GPUs.", None, 409)
                    return
            hub.ledger.decide(booking_id, "approved" if action == "approve" else "rejected", user.name)
        else:
            raise web.HTTPError(403, f"You may not {action or 'change'} booking {booking_id}")
        self.log.info("devdock: %s: booking %s %s", user.name, booking_id, action)
        hub.forget_bookings()
        week = f"{reservation.to_zone(booking.start, self._zone(spawner)):%Y-%m-%d}"
        self.redirect(f"{self.hub.base_url}devdock/reservations?week={week}")

    async def _book(self):
        form = {k: self.get_body_argument(k, "") for k in ("kind", "count", "start", "end", "group", "note")}
        hub, spawner, totals = await self._context()
        if hub is None:
            raise web.HTTPError(404, "GPU bookings are off on this hub")
        zone, user = self._zone(spawner), self.current_user
        try:
            start, end = _local_time(form["start"], zone), _local_time(form["end"], zone)
            count = int(form["count"])
        except ValueError as e:
            words = (
                str(e)
                if isinstance(e, BadTime)
                else "Give the number of GPUs, and the start and end as dates and times."
            )
            await self._page(words, form, 400)
            return
        group = form["group"].strip()
        if group and group not in {g.name for g in user.groups} and not user.admin:
            await self._page(f"You may book only for yourself or for a group you belong to (not {group!r}).", form,
                             400)  # fmt: skip
            return
        if group and self.db.query(orm.Group).filter_by(name=group).first() is None:
            await self._page(f"There is no group {group!r} on this hub.", form, 400)
            return
        if len(form["note"]) > NOTE_MAX:
            await self._page(f"The note is longer than {NOTE_MAX} characters.", form, 400)
            return
        rule = self._rule(spawner)
        status = "pending" if rule is not None and rule.approval else "approved"
        new = Booking(0, user.name, group, form["kind"], count, start, end, status, form["note"].strip())
        now, groups = utc_now(), {g.name for g in user.groups}
        problem = reservation.booking_problem(new, hub.ledger.bookings(now), totals, rule, groups, now,
                                              hub.settings.cull_warning)  # fmt: skip
        if problem:
            await self._page(problem, form, 400)
            return
        stored = hub.ledger.book(new)
        self.log.info("devdock: %s booked %s %s for %s, %s to %s UTC (%s)", user.name, count, form["kind"],
                      new.whom, start, end, status)  # fmt: skip
        hub.forget_bookings()
        week = f"{reservation.to_zone(start, zone):%Y-%m-%d}"
        self.redirect(f"{self.hub.base_url}devdock/reservations?week={week}&booked={stored.id}")

"""GPU reservations in the hub (part of the hub-wide object): the bookings, the servers they cut short, the line.

:class:`Reservations` is mixed into :class:`~devdock_spawner.hubwide.DevDockHub`. The bookings live in the
accounting database (accounting.py, table ``devdock_gpu_reservations``); what they mean is reservation.py's. The
hub object reads the running GPU servers from JupyterHub's own user objects, applies the bookings to every start
(:meth:`reservation_gate`), gives the culler the servers a booking cuts short (:meth:`reservation_deadlines`), and
tells each such server its new end, so that JupyterLab and the desktop warn their user as for any time limit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import reservation
from .accounting import utc_now
from .reservation import Booking, Holder

#: Seconds the hub keeps the bookings it read (a booking made on this hub's page is seen at once).
BOOKINGS_TTL = 10
#: Seconds between two rounds of telling servers the end a booking gives them.
TELL_EVERY = 10
#: Seconds the servers a booking cuts short are kept before they are worked out again.
DEADLINES_TTL = 5


@dataclass(frozen=True)
class Gate:
    """What the bookings on now ask of one start: go before the line (its units are booked for it), and how many
    units of its kind it must leave free (booked for others, unused)."""

    passes: bool
    keep_free: int
    why: str = ""


class Reservations:
    """The hub's GPU bookings (``self.settings`` holds ``gpu_reservation_*``; ``self.ledger`` stores them)."""

    def _init_reservations(self, spawner) -> None:
        #: JupyterHub's user objects (its ``users``), for the servers that hold GPUs now; None outside a hub
        self._users = (getattr(spawner.user, "settings", None) or {}).get("users")
        self._bookings: tuple[float, list[Booking]] | None = None
        #: what each running server was last told: (its end for a booking, None: its own limit; its run's start)
        self._told_ends: dict[str, tuple] = {}
        self._told_once = False
        #: the servers bookings cut short, as last worked out (monotonic time, the answer)
        self._deadlines: tuple[float, dict] | None = None

    # --- the bookings ----------------------------------------------------------------------

    def bookings(self) -> list[Booking]:
        """Pending and approved bookings not yet over ([] without the accounting database)."""
        if self._bookings is None or time.monotonic() - self._bookings[0] > BOOKINGS_TTL:
            ledger, found = self.ledger, []
            if ledger is not None:
                try:
                    found = ledger.bookings(utc_now() - timedelta(minutes=1))
                except Exception as e:  # noqa: BLE001 - starts go on as without bookings, said in the log
                    self.log.error("devdock: GPU bookings cannot be read (%s): none applies now", e)
            self._bookings = (time.monotonic(), found)
        return self._bookings[1]

    def forget_bookings(self) -> None:
        """A booking changed: read them again, and let waiting starts look again."""
        self._bookings = self._deadlines = None
        self.wake_line()

    def booking_totals(self) -> dict[str, int]:
        """The units of each kind that can be booked: those in the pool (not taken out for their health), of kinds
        whose GPUs are not also handed out in another shape (a GPU offered whole and as MIG slices); none when
        GPUs are shared between servers (``gpu_max_users_per_gpu``): bookings count whole units."""
        allocator = self.allocator
        if allocator is None or self.settings.gpu_max_users_per_gpu != 1:
            return {}
        out = set(allocator.unhealthy())
        mixed = {g.kind for g in allocator.inventory if g.parent in allocator.by_uuid}
        mixed |= {allocator.by_uuid[g.parent].kind for g in allocator.inventory if g.parent in allocator.by_uuid}
        return {
            kind: sum(1 for g in allocator.inventory if g.kind == kind and g.uuid not in out and g.parent not in out)
            for kind in allocator.kinds()
            if kind not in mixed
        }

    # --- the servers that hold GPUs ------------------------------------------------------------

    def _gpu_spawners(self):
        """``(user, spawner)`` for each running devdock server of this hub that holds GPUs."""
        if self._users is None or self.allocator is None:
            return
        for user in list(self._users.values()):
            for spawner in list(user.spawners.values()):
                if getattr(spawner, "devdock_hub", None) is self and spawner.active and spawner.gpu_ids:
                    yield user, spawner

    def gpu_holders(self) -> list[Holder]:
        holders = []
        for user, spawner in self._gpu_spawners():
            known = [self.allocator.by_uuid[u] for u in spawner.gpu_ids if u in self.allocator.by_uuid]
            started = getattr(spawner.orm_spawner, "started", None)
            if not known or started is None:
                continue
            groups = frozenset(g.name for g in user.groups)
            holders.append(Holder(spawner.server_key, user.name, groups, known[0].kind, len(known),
                                  started.replace(tzinfo=None), spawner.natural_end))  # fmt: skip
        return holders

    def reservation_deadlines(self) -> dict[str, tuple[datetime, Booking]]:
        """The running servers a booking cuts short: ``{key: (their new end, naive UTC; the booking)}`` (worked out
        again after DEADLINES_TTL seconds, or when a booking or a hold changes)."""
        bookings = [b for b in self.bookings() if b.status == "approved"]
        if not bookings:
            return {}
        if self._deadlines is None or time.monotonic() - self._deadlines[0] > DEADLINES_TTL:
            found = reservation.deadlines(bookings, self.gpu_holders(), self.booking_totals(), utc_now())
            self._deadlines = (time.monotonic(), found)
        return self._deadlines[1]

    def groups_of(self, username: str) -> set[str]:
        if self._users is None:
            return set()
        try:
            return {g.name for g in self._users[username].groups}
        except KeyError:
            return set()

    def reservation_gate(self, key: str, kind: str, units: int) -> Gate | None:
        """What the bookings on now ask of this start; None when none is on for its kind."""
        now, ahead = utc_now(), self.settings.cull_warning
        on = [b for b in self.bookings() if b.kind == kind and b.holds(now, ahead)]
        if not on or not units:
            return None
        user = key.rpartition("/")[0]
        groups, holders = self.groups_of(user), self.gpu_holders()
        keep = reservation.must_leave_free(on, holders, now, kind, user, groups, units, ahead)
        passes = reservation.member_may_pass(on, holders, now, kind, user, groups, units, ahead)
        others = [b for b in on if not b.is_member(user, groups)]
        why = ""
        if others:
            until = max(b.end for b in others)
            whom = ", ".join(sorted({b.whom for b in others}))
            why = f"{keep} of the free GPUs of this kind are booked for {whom} until {self.local_words(until)}."
        return Gate(passes, keep, why)

    def local_words(self, when: datetime) -> str:
        """A naive UTC time in the hub's time zone for bookings, as users read it ("Tue 14:00 CET")."""
        return f"{reservation.to_zone(when, reservation.zone(self.settings.gpu_reservation_timezone)):%a %H:%M %Z}"

    # --- telling servers ----------------------------------------------------------------------

    def _start_telling_ends(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not inside the hub
        self._tasks.append(asyncio.ensure_future(self._tell_ends_loop()))

    async def _tell_ends_loop(self) -> None:
        while True:
            await asyncio.sleep(TELL_EVERY)
            try:
                await self.tell_ends()
            except Exception as e:  # noqa: BLE001 - the next round tries again
                self.log.warning("devdock: telling servers the end their GPU bookings give them failed: %s", e)

    async def tell_ends(self) -> None:
        """Write each GPU server's time limit into it when a booking changed it, once after the hub starts (a file
        of before may be stale), and again until the server has it (its warnings read it)."""
        cut = self.reservation_deadlines() if self.bookings() else {}
        first, self._told_once = not self._told_once, True
        for _, spawner in list(self._gpu_spawners()):
            key = spawner.server_key
            told = (cut[key][0] if key in cut else None, spawner.orm_spawner.started)
            known = self._told_ends.get(key)
            if known == told or (known is None and told[0] is None and not first):
                continue  # as told; or never cut since this hub started: its environment (or Extend) says its limit
            if await spawner.write_time_limit():
                self._told_ends[key] = told
                if told[0] is not None:
                    self.log.info("devdock: %s must end at %s UTC for a GPU booking (%s)", key, told[0],
                                  cut[key][1].whom)  # fmt: skip

    def forget_told_end(self, key: str) -> None:
        """The server gave its GPUs back: a next run is told afresh."""
        self._told_ends.pop(key, None)
        self._deadlines = None

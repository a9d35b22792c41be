"""Accounting: every server's life in a database of its own (SQLAlchemy; SQLite beside the hub's by default).

One row per run of a server: who, which server and profile, which GPUs, from when to when, why it ended, and
what it used: GPU-seconds held (GPUs × the time the server ran), GPU-seconds busy (the GPUs' utilization, where
``nvidia-smi`` reads it, over time), CPU-seconds and peak memory (``docker stats``, every ``usage_interval``).
The hub object (hubwide.py) feeds it; the usage page (``/hub/devdock/usage``) and its CSV/JSON export read it.
A run's row is written at its start and at its end, and its usage every tenth reading, so a hub that stops
loses at most that; a restarted hub goes on with the same rows (the server's state keeps its row's id).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Float, Integer, String, create_engine, select
from sqlalchemy.orm import Session, declarative_base

from .reservation import Booking

Base = declarative_base()

#: Why a run ended, as the usage page and the export say it.
#: "stopped": by its user (or the server itself); "admin": by an admin or a hub service other than the culler.
END_REASONS = ("stopped", "admin", "idle", "max age", "contention", "reservation")

#: The export's columns, in order.
COLUMNS = (
    "id", "user", "server", "profile", "gpus", "gpu_count", "started", "ended", "end_reason",
    "seconds", "gpu_seconds_held", "gpu_seconds_busy", "cpu_seconds", "peak_memory_bytes",
)  # fmt: skip


class Run(Base):
    __tablename__ = "devdock_server_runs"
    id = Column(Integer, primary_key=True)
    user = Column(String(255), nullable=False, index=True)
    server = Column(String(255), nullable=False, default="")
    profile = Column(String(255), nullable=False, default="")
    gpus = Column(String(2000), nullable=False, default="")
    gpu_count = Column(Integer, nullable=False, default=0)
    started = Column(DateTime, nullable=False, index=True)
    ended = Column(DateTime, nullable=True)
    end_reason = Column(String(32), nullable=True)
    gpu_seconds_busy = Column(Float, nullable=True)
    cpu_seconds = Column(Float, nullable=False, default=0.0)
    peak_memory_bytes = Column(Integer, nullable=False, default=0)

    def seconds(self, now: datetime) -> float:
        return max(0.0, ((self.ended or now) - self.started).total_seconds())

    def as_dict(self, now: datetime) -> dict:
        seconds = self.seconds(now)
        return {
            "id": self.id,
            "user": self.user,
            "server": self.server,
            "profile": self.profile,
            "gpus": self.gpus,
            "gpu_count": self.gpu_count,
            "started": _iso(self.started),
            "ended": _iso(self.ended) if self.ended else "",
            "end_reason": self.end_reason or "",
            "seconds": round(seconds, 1),
            "gpu_seconds_held": round(seconds * self.gpu_count, 1),
            "gpu_seconds_busy": None if self.gpu_seconds_busy is None else round(self.gpu_seconds_busy, 1),
            "cpu_seconds": round(self.cpu_seconds, 1),
            "peak_memory_bytes": self.peak_memory_bytes,
        }


class Reservation(Base):
    """A booking of GPUs for a window (reservation.py decides what it means)."""

    __tablename__ = "devdock_gpu_reservations"
    id = Column(Integer, primary_key=True)
    by = Column(String(255), nullable=False, index=True)
    group = Column(String(255), nullable=False, default="")
    kind = Column(String(255), nullable=False)
    count = Column(Integer, nullable=False)
    start = Column(DateTime, nullable=False, index=True)
    end = Column(DateTime, nullable=False, index=True)
    status = Column(String(16), nullable=False, default="approved")
    note = Column(String(500), nullable=False, default="")
    created = Column(DateTime, nullable=False)
    decided_by = Column(String(255), nullable=False, default="")

    def booking(self) -> Booking:
        return Booking(self.id, self.by, self.group, self.kind, self.count, self.start, self.end, self.status,
                       self.note)  # fmt: skip


def _iso(when: datetime) -> str:
    return when.replace(tzinfo=UTC).isoformat()


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC, as JupyterHub's database does


def end_reason(stop_reason: dict | None) -> str:
    """What ended a run (one of :data:`END_REASONS`), from the culler's notice in the server's state."""
    reason = (stop_reason or {}).get("reason", "")
    if not reason:
        return "stopped"  # its user, an admin, or the server itself
    if "maximum age" in reason:
        return "max age"
    if "while others waited" in reason:
        return "contention"
    if "GPU reservation" in reason:
        return "reservation"
    return "idle"


@dataclass
class _Tally:
    """What a running server used since its row was last written."""

    cpu_seconds: float = 0.0
    gpu_seconds_busy: float | None = None
    peak_memory_bytes: int = 0
    rounds: int = field(default=0)


class Ledger:
    """The accounting database of one hub."""

    #: Usage is written every this many readings (and at the end of the run).
    WRITE_EVERY = 10

    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url, future=True)
        Base.metadata.create_all(self.engine)
        self._tallies: dict[int, _Tally] = {}

    def started(self, user: str, server: str, profile: str, gpus: list[str], when: datetime | None = None) -> int:
        with Session(self.engine) as session:
            run = Run(user=user, server=server, profile=profile, gpus=",".join(gpus), gpu_count=len(gpus),
                      started=when or utc_now())  # fmt: skip
            session.add(run)
            session.commit()
            return run.id

    def reading(self, run_id: int, seconds: float, cpu_cores: float, memory_bytes: int,
                gpu_percent: float | None, gpu_count: int) -> None:  # fmt: skip
        """One usage reading of a running server over the last ``seconds``."""
        tally = self._tallies.setdefault(run_id, _Tally())
        tally.cpu_seconds += cpu_cores * seconds
        tally.peak_memory_bytes = max(tally.peak_memory_bytes, memory_bytes)
        if gpu_percent is not None:
            tally.gpu_seconds_busy = (tally.gpu_seconds_busy or 0.0) + gpu_percent / 100 * gpu_count * seconds
        tally.rounds += 1
        if tally.rounds % self.WRITE_EVERY == 0:
            self._write(run_id)

    def ended(self, run_id: int, reason: str, when: datetime | None = None) -> dict | None:
        """Close the run's row; the row as it ends (None: no such row)."""
        return self._write(run_id, ended=when or utc_now(), reason=reason)

    def _write(self, run_id: int, ended: datetime | None = None, reason: str = "") -> dict | None:
        tally = self._tallies.pop(run_id, None) if ended else self._tallies.get(run_id)
        with Session(self.engine) as session:
            run = session.get(Run, run_id)
            if run is None:
                return None
            if tally is not None:
                run.cpu_seconds += tally.cpu_seconds
                run.peak_memory_bytes = max(run.peak_memory_bytes, tally.peak_memory_bytes)
                if tally.gpu_seconds_busy is not None:
                    run.gpu_seconds_busy = (run.gpu_seconds_busy or 0.0) + tally.gpu_seconds_busy
                if not ended:
                    self._tallies[run_id] = _Tally(rounds=tally.rounds)
            if ended and run.ended is None:
                run.ended, run.end_reason = ended, reason
            session.commit()
            return run.as_dict(utc_now())

    def amend_last_run(self, user: str, server: str, was: str, now: str, within: float = 120) -> bool:
        """Correct why the last run of ``user``'s ``server`` ended, if it said ``was`` and ended within ``within``
        seconds (an admin's stop learnt of after the row closed); True if it did."""
        query = select(Run).where(Run.user == user, Run.server == server, Run.ended.is_not(None))
        with Session(self.engine) as session:
            run = session.scalars(query.order_by(Run.ended.desc(), Run.id.desc()).limit(1)).first()
            if run is None or run.end_reason != was or (utc_now() - run.ended).total_seconds() > within:
                return False
            run.end_reason = now
            session.commit()
            return True

    def used_gpu_seconds(self, user: str, since: datetime, now: datetime | None = None) -> float:
        """GPU-seconds ``user``'s servers held from ``since`` to now (running ones up to now; naive UTC)."""
        now = now or utc_now()
        return sum(
            max(0.0, (end - max(run.started, since)).total_seconds()) * run.gpu_count
            for run, end in self._gpu_runs(user, since, now)
        )

    def _gpu_runs(self, user: str, since: datetime, now: datetime) -> list[tuple[Run, datetime]]:
        """``(run, its end or now)`` of ``user``'s runs with GPUs that ended after ``since`` or still run."""
        query = select(Run).where(Run.user == user, Run.gpu_count > 0)
        query = query.where((Run.ended.is_(None)) | (Run.ended > since))
        with Session(self.engine) as session:
            return [(run, min(run.ended or now, now)) for run in session.scalars(query)]

    def decayed_gpu_seconds(self, user: str, half_life: float, now: datetime | None = None) -> float:
        """``user``'s GPU-seconds held, each run's weighed by 0.5 ** (how long ago it ended / ``half_life``); running
        ones count in full (fair share, as Slurm's usage decay). Runs older than ten half-lives are left out."""
        now = now or utc_now()
        return sum(
            max(0.0, (end - run.started).total_seconds())
            * run.gpu_count
            * 0.5 ** ((now - end).total_seconds() / half_life)
            for run, end in self._gpu_runs(user, now - timedelta(seconds=10 * half_life), now)
        )

    # --- GPU reservations ----------------------------------------------------------------------

    def book(self, booking: Booking) -> Booking:
        """Store a new booking (its ``id`` is ignored); the stored one."""
        with Session(self.engine) as session:
            row = Reservation(by=booking.by, group=booking.group, kind=booking.kind, count=booking.count,
                              start=booking.start, end=booking.end, status=booking.status, note=booking.note,
                              created=utc_now())  # fmt: skip
            session.add(row)
            session.commit()
            return row.booking()

    def bookings(self, since: datetime, until: datetime | None = None) -> list[Booking]:
        """Pending and approved bookings whose window ends after ``since`` (and starts before ``until``)."""
        query = select(Reservation).where(Reservation.end > since, Reservation.status.in_(("pending", "approved")))
        if until is not None:
            query = query.where(Reservation.start < until)
        with Session(self.engine) as session:
            return [row.booking() for row in session.scalars(query.order_by(Reservation.start, Reservation.id))]

    def booking(self, booking_id: int) -> Booking | None:
        with Session(self.engine) as session:
            row = session.get(Reservation, booking_id)
            return None if row is None else row.booking()

    def decide(self, booking_id: int, status: str, by: str) -> None:
        """Approve, reject or cancel a booking."""
        with Session(self.engine) as session:
            row = session.get(Reservation, booking_id)
            if row is not None:
                row.status, row.decided_by = status, by
                session.commit()

    def runs(self, user: str | None = None, since: datetime | None = None) -> list[dict]:
        """The rows (newest first), of one user or everyone, started at or after ``since``."""
        query = select(Run).order_by(Run.started.desc(), Run.id.desc())
        if user is not None:
            query = query.where(Run.user == user)
        if since is not None:
            query = query.where(Run.started >= since)
        now = utc_now()
        with Session(self.engine) as session:
            return [run.as_dict(now) for run in session.scalars(query)]


def monthly_totals(rows: list[dict], groups_of: dict[str, list[str]] | None = None) -> list[dict]:
    """Per user and month (of the start): runs, hours, GPU-hours held and busy, CPU-hours. With ``groups_of``
    ({user: [groups]}), per group and month instead (a member of two groups counts in both; "" for none)."""
    totals: dict[tuple[str, str], dict] = {}
    for row in rows:
        for who in (groups_of.get(row["user"]) or [""]) if groups_of is not None else [row["user"]]:
            _add(totals, (row["started"][:7], who), row)
    return [
        {k: round(v, 2) if isinstance(v, float) else v for k, v in t.items()}
        for _, t in sorted(totals.items(), key=lambda item: (item[0][0], item[0][1]), reverse=True)
    ]


def _add(totals: dict, key: tuple[str, str], row: dict) -> None:
    t = totals.setdefault(key, {"month": key[0], "user": key[1], "runs": 0, "hours": 0.0,
                                "gpu_hours_held": 0.0, "gpu_hours_busy": 0.0, "cpu_hours": 0.0})  # fmt: skip
    t["runs"] += 1
    t["hours"] += row["seconds"] / 3600
    t["gpu_hours_held"] += row["gpu_seconds_held"] / 3600
    t["gpu_hours_busy"] += (row["gpu_seconds_busy"] or 0) / 3600
    t["cpu_hours"] += row["cpu_seconds"] / 3600


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()

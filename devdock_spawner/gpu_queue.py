"""The line for GPUs (pure logic): who waits for which GPUs, in which order, and how long it may take.

When every GPU of the kind a spawn asks for is taken, the spawn waits in line instead of being refused
(``DevDockSpawner.gpu_queue``). One line per kind of unit (whole GPUs, or MIG instances of one profile, or a
profile's own pinned GPUs): first come, first served, and nobody takes a unit while someone asked earlier for the
same kind, so a request for two GPUs is not starved by a stream of requests for one. With ``gpu_queue_order =
"fair-share"`` the line is ordered by each user's recent GPU use first (GPU-seconds held, halved every
``gpu_fair_share_half_life``, from the accounting database, as Slurm's fair-share factor decays usage), then by
arrival. The hub object
(``hubwide_gpu.GPUWatch``) keeps the line; this module only orders it and estimates.

The estimate is honest about what it knows: each held unit frees at its server's expected end, which is the start
plus the usual length of a hold of that kind (the median of the last holds that ended) when there is history, and
never later than the server's maximum age (``cull_gpu_max_age`` or the profile's ``max_age``). Without either
there is no estimate, and the page says so.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: The rank of a start past its quota: behind any start within quota, whatever their fair-share ranks.
OVER_QUOTA_RANK = 1e15
#: Holds that ended, kept per kind for the estimate (the newest ones).
HISTORY = 20
#: Fewer ended holds than this: no median yet (the maximum age alone bounds the estimate).
MIN_HISTORY = 3


@dataclass
class Waiter:
    """One spawn in line: its server (``user/server``), its line, the units it wants, since when (epoch seconds)."""

    key: str
    line: str
    count: int
    since: float
    #: fair share: the user's recent GPU use (decayed GPU-seconds, accounting.py); less goes first. 0 in FIFO order
    rank: float = 0.0


@dataclass
class Hold:
    """Units held by one server: since when, and the latest it may run (epoch seconds; 0: no maximum age)."""

    line: str
    units: int
    since: float
    deadline: float = 0.0


@dataclass
class Wait:
    """How a spawn may wait: in line since ``since`` (epoch seconds; kept across hub restarts), for at most
    ``max_wait`` seconds, told ``tell(place, in_line, estimate_seconds_or_None)`` at each move of the line."""

    since: float
    max_wait: float
    tell: Callable[[int, int, float | None], None]
    #: past its quota (``gpu_quota_exceeded = "wait"``): behind every start within quota
    last: bool = False


def _order(waiter: Waiter) -> tuple:
    """First in line: the lowest rank (fair share: the least recent GPU use), then who came first."""
    return (waiter.rank, waiter.since, waiter.key)


def line_name(kind: str, pinned: list[str] | tuple[str, ...] = ()) -> str:
    """The line of a request: its kind, and its pinned GPUs if the profile names them."""
    return f"{kind}:{','.join(sorted(pinned))}" if pinned else kind


class GPUQueue:
    """The waiting spawns, by line, and the holds that will free units (not thread-safe: the hub's event loop)."""

    def __init__(self) -> None:
        self._waiters: dict[str, Waiter] = {}
        self._holds: dict[str, Hold] = {}
        self._history: dict[str, deque] = {}

    # --- the line ----------------------------------------------------------------------------

    def join(self, waiter: Waiter) -> Waiter:
        """Put a spawn in its line; one already there keeps its place (the earlier ``since``)."""
        known = self._waiters.get(waiter.key)
        if known is not None and known.line == waiter.line:
            known.since = min(known.since, waiter.since)
            known.count = waiter.count
            return known  # its rank stays what it was when it joined (an admin may have moved it)
        self._waiters[waiter.key] = waiter
        return waiter

    def waiter(self, key: str) -> Waiter | None:
        return self._waiters.get(key)

    def to_front(self, key: str) -> float:
        """Put ``key`` first in its line (an admin's choice); its new ``since``."""
        waiter = self._waiters[key]
        line = self.line(waiter.line)
        waiter.rank = min(w.rank for w in line) - 1
        waiter.since = min(w.since for w in line) - 1
        return waiter.since

    def leave(self, key: str) -> bool:
        return self._waiters.pop(key, None) is not None

    def line(self, line: str) -> list[Waiter]:
        """The waiters of one line, first first (by when they joined, then by name, so ties are stable)."""
        return sorted((w for w in self._waiters.values() if w.line == line), key=_order)

    def waiting(self) -> list[Waiter]:
        """Everyone in every line, first first."""
        return sorted(self._waiters.values(), key=_order)

    def position(self, key: str) -> int:
        """1 for the first in its line; 0 for a server not in line."""
        waiter = self._waiters.get(key)
        if waiter is None:
            return 0
        return [w.key for w in self.line(waiter.line)].index(key) + 1

    def may_take(self, key: str, line: str) -> bool:
        """Whether ``key`` may take units of ``line`` now: nobody who asked earlier waits in that line."""
        waiting = self.line(line)
        return not waiting or waiting[0].key == key

    def __len__(self) -> int:
        return len(self._waiters)

    # --- holds and the estimate ----------------------------------------------------------------

    def held(self, key: str, hold: Hold) -> None:
        self._holds[key] = hold

    def given_back(self, key: str, now: float) -> None:
        """A server gave its units back: its hold's length goes into its line's history."""
        hold = self._holds.pop(key, None)
        if hold is not None and hold.units:
            self._history.setdefault(hold.line, deque(maxlen=HISTORY)).append(max(0.0, now - hold.since))

    def usual_hold(self, line: str) -> float | None:
        """The median length of the last holds of ``line`` that ended (None with too few)."""
        history = self._history.get(line, ())
        return statistics.median(history) if len(history) >= MIN_HISTORY else None

    def expected_frees(self, line: str, now: float) -> list[float]:
        """When each held unit of ``line`` is expected to free (epoch seconds), soonest first; units whose end
        nothing bounds are left out."""
        usual = self.usual_hold(line)
        frees = []
        for hold in self._holds.values():
            if hold.line != line:
                continue
            ends = [e for e in (hold.since + usual if usual is not None else 0, hold.deadline) if e]
            if ends:
                frees.extend([max(now, min(ends))] * hold.units)
        return sorted(frees)

    def estimate(self, key: str, free_now: int, now: float) -> float | None:
        """Seconds until ``key``'s turn is expected, None when nothing bounds it.

        The units wanted by everyone up to and including ``key`` in its line, less the ``free_now`` ones, must
        free first; the estimate is when the last of those is expected to.
        """
        waiter = self._waiters.get(key)
        if waiter is None:
            return None
        needed = -free_now
        for w in self.line(waiter.line):
            needed += w.count
            if w.key == key:
                break
        if needed <= 0:
            return 0.0
        frees = self.expected_frees(waiter.line, now)
        if needed > len(frees):
            return None
        return frees[needed - 1] - now


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th ... 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def wait_words(seconds: float | None) -> str:
    """An estimate in a user's words."""
    if seconds is None:
        return "no estimate yet (nothing says when the GPUs in use will be given back)"
    if seconds < 90:
        return "about a minute"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} minutes"
    hours = seconds / 3600
    return f"about {hours:.1f} hours" if hours < 10 else f"about {round(hours)} hours"

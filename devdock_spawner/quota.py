"""GPU quotas (pure logic): how many GPU-hours a person may hold per day, week or month, and how many GPUs at once.

``DevDockSpawner.gpu_quotas`` names a default rule, rules per JupyterHub group (so an identity provider's groups
work, through the authenticator's ``manage_groups``) and rules per user::

    {"default": {"gpu_hours": 40, "period": "week", "gpus_at_once": 2},
     "groups": {"students": {"gpu_hours": 10, "period": "week", "gpus_at_once": 1}},
     "users": {"ana": {"gpu_hours": 200, "period": "month"}}}

A user's own rule wins; else the most generous rule of their groups (each member gets the group's allowance);
else the default; no rule: no quota. What a person used is read from the accounting database (accounting.py):
GPU-seconds held by their servers' runs within the period, running ones up to now. A start that asks for GPUs is
refused with a sentence once the period's hours are used up (a running server is not stopped for it: the time
limits do that); ``gpus_at_once`` caps the GPUs one person holds across their servers, like ``gpu_max_per_user``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

PERIODS = ("day", "week", "month")


class InvalidQuota(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    gpu_hours: float | None = None  # None: no limit on hours
    period: str = "week"
    gpus_at_once: int = 0  # 0: no cap of its own
    source: str = "default"  # "default", "group <name>", "user"

    @property
    def words(self) -> str:
        return {"default": "this hub's default", "user": "your own"}.get(
            self.source, f"the {self.source.removeprefix('group ')} group's"
        )


def _rule(entry: object, source: str) -> Rule:
    if not isinstance(entry, dict):
        raise InvalidQuota(f"the quota of {source} must be a dict, not {entry!r}")
    unknown = set(entry) - {"gpu_hours", "period", "gpus_at_once"}
    if unknown:
        raise InvalidQuota(f"the quota of {source} has unknown keys {sorted(unknown)}")
    hours = entry.get("gpu_hours")
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float) or hours < 0):
        raise InvalidQuota(f"gpu_hours of {source} must be a number >= 0")
    period = entry.get("period", "week")
    if period not in PERIODS:
        raise InvalidQuota(f"period of {source} must be one of {PERIODS}, not {period!r}")
    at_once = entry.get("gpus_at_once", 0)
    if isinstance(at_once, bool) or not isinstance(at_once, int) or at_once < 0:
        raise InvalidQuota(f"gpus_at_once of {source} must be a whole number >= 0")
    return Rule(None if hours is None else float(hours), period, at_once, source)


def check(quotas: dict) -> None:
    """Raise :class:`InvalidQuota` with a sentence for a misconfigured ``gpu_quotas``."""
    unknown = set(quotas) - {"default", "groups", "users"}
    if unknown:
        raise InvalidQuota(f"gpu_quotas has unknown keys {sorted(unknown)} (default, groups, users)")
    if "default" in quotas:
        _rule(quotas["default"], "default")
    for kind, prefix in (("groups", "group "), ("users", "user ")):
        for name, entry in (quotas.get(kind) or {}).items():
            _rule(entry, prefix + name)


def rule_for(quotas: dict, user: str, groups: set[str]) -> Rule | None:
    """The rule that applies to ``user`` (in ``groups``), None when no quota applies."""
    check(quotas)
    users = quotas.get("users") or {}
    if user in users:
        return _rule(users[user], "user")
    group_rules = [_rule(e, f"group {g}") for g, e in (quotas.get("groups") or {}).items() if g in groups]
    if group_rules:
        # The most generous: no limit beats any, then the most hours (per day, to compare periods), then GPUs.
        def generosity(r: Rule):
            days = {"day": 1, "week": 7, "month": 30}[r.period]
            per_day = float("inf") if r.gpu_hours is None else r.gpu_hours / days
            return (per_day, r.gpus_at_once == 0, r.gpus_at_once)

        return max(group_rules, key=generosity)
    if "default" in quotas:
        return _rule(quotas["default"], "default")
    return None


def period_start(period: str, now: datetime) -> datetime:
    """The start of the current day, week (Monday) or month, in UTC (``now`` naive UTC)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_period(period: str, start: datetime) -> datetime:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def refusal(rule: Rule, used_gpu_seconds: float, wanted_gpus: int, now: datetime) -> str:
    """Why a start asking for ``wanted_gpus`` is refused under ``rule`` ("" if it is not)."""
    if not wanted_gpus or rule.gpu_hours is None:
        return ""
    used = used_gpu_seconds / 3600
    if used < rule.gpu_hours:
        return ""
    again = next_period(rule.period, period_start(rule.period, now))
    return (
        f"You have used {used:.3g} of {rule.words} {rule.gpu_hours:g} GPU-hours this {rule.period}: no GPU server "
        f"starts until {again:%A %Y-%m-%d %H:%M} UTC. Choose a profile without GPUs, or ask an admin for more."
    )


def left_words(rule: Rule, used_gpu_seconds: float) -> str:
    """The spawn form's line: what is left of the period's GPU-hours."""
    if rule.gpu_hours is None:
        cap = f" (at most {rule.gpus_at_once} GPUs at once)" if rule.gpus_at_once else ""
        return f"Your GPU-hours are not limited{cap}."
    left = max(0.0, rule.gpu_hours - used_gpu_seconds / 3600)
    cap = f", at most {rule.gpus_at_once} GPUs at once" if rule.gpus_at_once else ""
    return f"GPU-hours left this {rule.period}: {left:.3g} of {rule.gpu_hours:g} ({rule.words} quota{cap})."

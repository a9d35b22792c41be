"""The accounting database (accounting.py) on a real SQLite file: a run's row from start to end, its usage
readings, why it ended, the monthly totals and the CSV export; the real hub's rows are tested in
tests/e2e/test_gpu_queue_journey.py."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

from devdock_spawner.accounting import COLUMNS, Ledger, end_reason, monthly_totals, to_csv


def test_accounting_a_run_from_start_to_end_with_its_readings_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path / 'acct.sqlite'}"
    ledger = Ledger(url)
    start = datetime(2026, 12, 1, 10, 0, 0)
    run = ledger.started("ana", "", "gpu", ["GPU-a", "GPU-b"], when=start)
    for _ in range(12):  # 12 readings of 30 s: 1.5 cores busy, the two GPUs 50 % busy
        ledger.reading(run, 30, 1.5, 2 << 30, 50.0, 2)
    ledger.reading(run, 30, 0.1, 5 << 30, None, 2)  # a reading without GPU figures adds none
    ledger.ended(run, "idle", when=start + timedelta(hours=2))
    (row,) = Ledger(url).runs()  # a new connection: it was written, not only kept in memory
    assert (row["user"], row["gpus"], row["gpu_count"], row["end_reason"]) == ("ana", "GPU-a,GPU-b", 2, "idle")
    assert row["seconds"] == 7200 and row["gpu_seconds_held"] == 14400
    assert row["gpu_seconds_busy"] == 12 * 30 * 2 * 0.5
    assert row["cpu_seconds"] == 12 * 30 * 1.5 + 3.0
    assert row["peak_memory_bytes"] == 5 << 30
    ledger.ended(run, "stopped")  # a second end changes nothing
    assert Ledger(url).runs()[0]["end_reason"] == "idle"


def test_accounting_rows_per_user_and_since_monthly_totals_and_csv(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'acct.sqlite'}")
    nov, dec = datetime(2026, 11, 30, 23, 0), datetime(2026, 12, 2, 9, 0)
    for user, when, gpus, hours in (("ana", nov, ["G0"], 1), ("ana", dec, ["G0", "G1"], 3), ("bo", dec, [], 5)):
        run = ledger.started(user, "", "p", gpus, when=when)
        ledger.ended(run, "stopped", when=when + timedelta(hours=hours))
    assert [r["user"] for r in ledger.runs("ana")] == ["ana", "ana"]
    assert [r["started"][:10] for r in ledger.runs(since=datetime(2026, 12, 1))] == ["2026-12-02", "2026-12-02"]
    totals = {(t["month"], t["user"]): t for t in monthly_totals(ledger.runs())}
    assert totals[("2026-12", "ana")]["gpu_hours_held"] == 6.0 and totals[("2026-11", "ana")]["gpu_hours_held"] == 1.0
    assert totals[("2026-12", "bo")]["hours"] == 5.0 and totals[("2026-12", "bo")]["gpu_hours_held"] == 0
    groups = {(t["month"], t["user"]): t for t in monthly_totals(ledger.runs(), {"ana": ["lab", "ml"], "bo": []})}
    assert groups[("2026-12", "lab")]["gpu_hours_held"] == groups[("2026-12", "ml")]["gpu_hours_held"] == 6.0
    assert groups[("2026-12", "")]["hours"] == 5.0  # bo, in no group
    rows = list(csv.DictReader(io.StringIO(to_csv(ledger.runs()))))
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 3


def test_accounting_decayed_gpu_use_halves_every_half_life_and_counts_running_runs_in_full(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'acct.sqlite'}")
    now, week = datetime(2026, 12, 10, 12, 0), timedelta(days=7)
    old = ledger.started("ana", "", "gpu", ["G0"], when=now - week - timedelta(hours=1))
    ledger.ended(old, "stopped", when=now - week)  # one GPU-hour, a half-life ago: counts half
    ledger.started("ana", "b", "gpu", ["G0", "G1"], when=now - timedelta(hours=1))  # running: two GPU-hours in full
    ancient = ledger.started("ana", "", "gpu", ["G0"], when=now - 11 * week - timedelta(hours=5))
    ledger.ended(ancient, "stopped", when=now - 11 * week)  # past ten half-lives: left out
    assert ledger.decayed_gpu_seconds("ana", week.total_seconds(), now) == 1800 + 7200
    assert ledger.decayed_gpu_seconds("bo", week.total_seconds(), now) == 0


def test_accounting_end_reason_from_the_cullers_notice():
    assert end_reason({}) == "stopped"
    assert end_reason({"reason": "it was idle for 2 h (the limit is 2 h)"}) == "idle"
    assert end_reason({"reason": "it reached the maximum age of 3 d for the gpu profile"}) == "max age"
    assert end_reason({"reason": "it was idle for 31 min while others waited in line for its GPUs"}) == "contention"


def test_accounting_an_admins_stop_learnt_of_after_the_row_closed_is_corrected_and_nothing_else(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/a.sqlite")
    stopped, culled = ledger.started("ana", "", "gpu", ["G0"]), ledger.started("bo", "", "gpu", ["G1"])
    old = ledger.started("cy", "", "gpu", ["G1"], when=datetime(2026, 1, 1))
    ledger.ended(stopped, "stopped")
    ledger.ended(culled, "idle")
    ledger.ended(old, "stopped", when=datetime(2026, 1, 2))
    assert ledger.amend_last_run("ana", "", "stopped", "admin")
    assert not ledger.amend_last_run("bo", "", "stopped", "admin")  # the culler's reason stays
    assert not ledger.amend_last_run("cy", "", "stopped", "admin")  # not a stop of now
    assert not ledger.amend_last_run("ana", "other", "stopped", "admin")  # another server
    assert {r["user"]: r["end_reason"] for r in ledger.runs()} == {"ana": "admin", "bo": "idle", "cy": "stopped"}

"""Accounting on a real PostgreSQL server (Debian's, started for this module): the hub writes each run there
(``accounting_url``), the usage page reads it back, and the database holds exactly those rows."""

from __future__ import annotations

import glob
import html
import os
import shutil
import subprocess
import tempfile
from datetime import date, timedelta

import psycopg
import pytest

from tests.harness import RUN_ID, devices_mode_config, free_port, xsrf_from


@pytest.fixture(scope="module")
def postgresql():
    """A PostgreSQL server on 127.0.0.1 (trust for the loopback only, data on a scratch folder), and its URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)"
    bin_dir = os.path.dirname(found[-1])
    folder = tempfile.mkdtemp(prefix=f"devdock-pg-{RUN_ID}-")
    os.chmod(folder, 0o755)
    data = os.path.join(folder, "data")
    shutil.chown(folder, "postgres", "postgres")
    port = free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, cwd=folder)

    as_postgres(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    as_postgres(f"{bin_dir}/pg_ctl", "-D", data, "-o", options, "-l", f"{folder}/log", "-w", "start")
    try:
        as_postgres(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "devdock")
        yield (
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/devdock",
            f"postgresql://postgres@127.0.0.1:{port}/devdock",
        )
    finally:
        as_postgres(f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_accounting_on_postgresql_the_hub_writes_each_run_and_reads_it_back(make_hub, postgresql):
    url, plain = postgresql
    hub = make_hub("acct-pg", DEVDOCK_ACCOUNTING_URL=url)
    hub.spawn("pgann")
    hub.stop_server("pgann", by="pgann")  # her own stop
    hub.spawn("pgann")
    hub.stop_server("pgann", by="admin")  # an admin's, as JupyterHub's admin page sends it
    hub.spawn("pgann")  # a third run, left running
    runs = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/usage?format=json", timeout=30).json()["runs"]
    assert [(r["user"], bool(r["ended"]), r["end_reason"]) for r in runs] == [
        ("pgann", False, ""), ("pgann", True, "admin"), ("pgann", True, "stopped"),
    ]  # fmt: skip
    with psycopg.connect(plain) as db:  # the rows are PostgreSQL's, not a file beside the hub
        rows = db.execute("SELECT id, end_reason FROM devdock_server_runs ORDER BY id").fetchall()
    assert [(r["id"], r["end_reason"] or None) for r in reversed(runs)] == rows
    assert not os.path.exists(os.path.join(hub.env["DEVDOCK_DATA_DIR"], "devdock-accounting.sqlite"))
    hub.stop_server("pgann")


def test_gpu_reservation_bookings_on_postgresql_are_written_and_read_back(make_hub, postgresql, device_nodes):
    """The bookings' table (columns named ``group`` and ``end``, words PostgreSQL reserves) on the real server."""
    url, plain = postgresql
    uuids = [f"GPU-pgb{RUN_ID}-0000-0000-0000-000000000000"]
    hub = make_hub("book-pg", DEVDOCK_ACCOUNTING_URL=url, extra_config=devices_mode_config(device_nodes[:1], uuids))
    assert hub.api("POST", "/groups/lab").status_code in (201, 409)  # bookings are for groups the hub has
    admin = hub.browser_session("admin")
    page = admin.get(f"{hub.url}/hub/devdock/reservations", timeout=30).text
    day = f"{date.today() + timedelta(days=14 - date.today().weekday()):%Y-%m-%d}"  # a Monday two weeks ahead
    r = admin.post(f"{hub.url}/hub/devdock/reservations", timeout=30, data={
        "_xsrf": xsrf_from(page), "action": "book", "kind": "gpu", "count": "1", "group": "lab", "note": "exam",
        "start": f"{day}T14:00", "end": f"{day}T16:00",
    })  # fmt: skip
    assert r.status_code == 200, html.unescape(r.text).partition("devdock-booking-problem")[2][:300]
    week = admin.get(f"{hub.url}/hub/devdock/reservations?week={day}&format=json", timeout=30).json()
    assert [(b["for"], b["count"], b["start"][:16], b["status"]) for b in week["bookings"]] == [
        ("the group lab", 1, f"{day}T14:00", "approved"),
    ]
    with psycopg.connect(plain) as db:  # PostgreSQL's rows (the hub's zone is UTC here)
        rows = db.execute('SELECT "group", count, start, "end", note FROM devdock_gpu_reservations').fetchall()
    assert [(g, c, f"{s:%Y-%m-%d %H:%M}", f"{e:%H:%M}", n) for g, c, s, e, n in rows] == [
        ("lab", 1, f"{day} 14:00", "16:00", "exam"),
    ]

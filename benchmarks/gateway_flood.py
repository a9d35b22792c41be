"""Offers of random keys per second the SSH gateway's port takes while the hub's ``/hub/health`` stays under 100 ms:
the key lookup before issue 30 (the hub read and parsed every user's key file on its event loop for each offer)
and after it (an in-memory index; lookups limited per client address), side by side.

    .venv/bin/python benchmarks/gateway_flood.py [--users 1000] [--keys 5] [--seconds 8]
                                                 [--rates 2,5,10,20,40,80,160] [--sources 32] [--before 55bade7]

For each way: one hub (``ssh_mode = "gateway"``) whose key folder holds --users users with --keys keys each (files
in devdock 0.3's form, which both read), and the gateway in front of it, as ``scripts/up.sh`` runs it. The flood
is the real OpenSSH client offering 3 new random public keys per connection (it has no private key, so it can only
offer; run with ``nice -n 19``, as an attacker's CPU is not the hub's), started at each rate in turn for --seconds;
``/hub/health`` is asked every 50 ms meanwhile, from 127.0.0.1. A rate is taken when the 95th percentile of those
answers stays under 100 ms. The hub's log counts the lookups it answered, and how long each took it.

The ways: "before" is the commit --before (the hub's package and config and the gateway's scripts and sshd_config,
taken with ``git archive``: nothing in this checkout changes; the scripts are mounted over the current image's),
flooded from 127.0.0.2; "after" is this checkout, flooded from 127.0.0.2 (so its per-address limits act: sshd's
``PerSourceMaxStartups`` and the keys command's lookup limit), and then from --sources addresses in turn
(127.0.0.2, 127.0.0.3, ...), whose lookups those limits do not stop: what the hub's index alone does.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import secrets
import statistics
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import requests
from common import ROOT, harness, machine, median, table

#: The commit before issue 30's gateway work (its parent); --before picks another.
BEFORE = "55bade7"
HEALTH_LIMIT_MS = 100
KEYS_PER_CONNECTION = 3
MAX_CLIENTS = 48
#: The gateway's files of "before", mounted over the current image's: (name, folder in the image).
GATEWAY_FILES = [
    ("devdock-gateway-keys", "/usr/local/bin/"),
    ("gatewaylib.py", "/usr/local/lib/devdock-gateway/"),
    ("sshd_config", "/etc/devdock-gateway/"),
]


def random_key() -> str:
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", secrets.token_bytes(32)))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


def fill_key_folder(folder: Path, users: int, keys: int) -> None:
    """``users`` key files of ``keys`` random keys each, with devdock 0.3's owner line (both versions read it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(users):
        name = f"user{i:05d}"
        lines = "".join(f"{random_key()} {name}@laptop\n" for _ in range(keys))
        (folder / f"{name}.pub").write_text(f"# devdock keys of {name}\n{lines}")


def old_tree(commit: str, into: Path) -> Path:
    """The hub's package and config and the gateway's files of ``commit``, unpacked into ``into``."""
    paths = ["devdock_spawner", "jupyterhub_config.py", "images/ssh-gateway"]
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, *paths], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


class Flood:
    """Connections of the real ssh client at a rate, each offering new random keys; counts what happened."""

    def __init__(self, port: int, folder: Path, target: str, sources: int):
        self.port, self.folder, self.target = port, folder, target
        #: the loopback addresses it comes from, in turn: 127.0.0.2, 127.0.0.3, ...
        self.sources = [f"127.0.0.{2 + i}" for i in range(sources)]
        self.started = self.closed_at_door = self.refused = self.got_in = 0
        self._lock = threading.Lock()

    def _one(self, n: int) -> None:
        files = []
        for k in range(KEYS_PER_CONNECTION):
            path = self.folder / f"offer-{n}-{k}.pub"
            path.write_text(random_key() + "\n")
            files += ["-i", str(path)]
        done = subprocess.run(
            ["nice", "-n", "19", "ssh", "-b", self.sources[n % len(self.sources)], "-p", str(self.port), *files,
             "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
             "-o", "PreferredAuthentications=publickey", "devdock@127.0.0.1", self.target],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        for path in files[1::2]:
            os.unlink(path)
        with self._lock:
            if "Too many authentication failures" in done.stderr or "Permission denied" in done.stderr:
                self.refused += 1
            else:
                self.closed_at_door += 1
            self.got_in += done.returncode != 255

    def run(self, offers_per_second: float, seconds: float) -> float:
        """Start connections at the rate for ``seconds`` (at most MAX_CLIENTS at once); the offers per second sent."""
        interval = KEYS_PER_CONNECTION / offers_per_second
        threads: list[threading.Thread] = []
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < seconds:
            threads = [t for t in threads if t.is_alive()]
            if len(threads) < MAX_CLIENTS:
                thread = threading.Thread(target=self._one, args=(self.started + n,), daemon=True)
                thread.start()
                threads.append(thread)
                n += 1
            time.sleep(max(0.005, t0 + n * interval - time.monotonic()))
        for thread in threads:
            thread.join(90)
        self.started += n
        return n * KEYS_PER_CONNECTION / seconds


def health_during(url: str, action) -> tuple[list[float], object]:
    """``action()``'s result, and the times (ms) of ``/hub/health`` asked every 50 ms while it ran."""
    times: list[float] = []
    stop = threading.Event()

    def probe():
        session = requests.Session()
        while not stop.is_set():
            t = time.perf_counter()
            try:
                session.get(f"{url}/hub/health", timeout=30).raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
            except requests.RequestException:
                times.append(30_000.0)
            stop.wait(0.05)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        result = action()
    finally:
        stop.set()
        prober.join(40)
    return times, result


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else float("nan")


LOOKUP_LINE = re.compile(r"GET /hub/api/devdock/ssh-gateway/keys\S* \([^)]*\) ([0-9.]+)ms")


def lookup_times(hub: harness.Hub) -> list[float]:
    """How long each key lookup took the hub (ms), from its log, which has a line for each request."""
    try:
        return [float(t) for t in LOOKUP_LINE.findall(hub.log_path.read_text(errors="replace"))]
    except FileNotFoundError:
        return []


def lookups(hub: harness.Hub) -> int:
    return len(lookup_times(hub))


def measure(way: str, client, tmp: Path, args, old: Path | None, sources: int) -> list[dict]:
    token, port = secrets.token_hex(16), harness.free_port()
    data = tmp / way.replace(" ", "-").replace(",", "")
    env = {"DEVDOCK_SSH_MODE": "gateway", "DEVDOCK_SSH_GATEWAY_TOKEN": token, "DEVDOCK_SSH_GATEWAY_PORT": str(port)}
    if old is not None:
        env["PYTHONPATH"] = str(old)
    hub = harness.Hub(client, data, config=(old or ROOT) / "jupyterhub_config.py", **env)
    fill_key_folder(data / "ssh-keys", args.users, args.keys)
    volumes = {}
    if old is not None:
        for name, inside in GATEWAY_FILES:
            volumes[str(old / "images/ssh-gateway" / name)] = {"bind": inside + name, "mode": "ro"}
    (data / "gateway").mkdir(parents=True)
    gateway = harness.Gateway(client, hub.url, token, port, data / "gateway", volumes=volumes)
    rows = []
    try:
        hub.start()
        gateway.start()
        flood = Flood(port, tmp, "user00000", sources)
        flood.run(3, 2)  # warm-up: the first lookup (the new hub reads its files into the index then)
        for rate in args.rates:
            asked = lookups(hub)
            times, sent = health_during(hub.url, lambda rate=rate: flood.run(rate, args.seconds))
            answered = lookup_times(hub)[asked:]
            rows.append({"rate": rate, "sent": sent, "p95": p95(times), "max": max(times),
                         "lookups": len(answered) / args.seconds, "lookup_ms": answered})  # fmt: skip
            print(f"{way}: {rate:g} offers/s asked, {sent:.1f} sent, the hub answered {rows[-1]['lookups']:.1f} "
                  f"lookups/s (median {median(answered):.1f} ms), "
                  f"/hub/health p95 {rows[-1]['p95']:.0f} ms, max {rows[-1]['max']:.0f} ms ({len(times)} answers)",
                  flush=True)  # fmt: skip
        print(f"{way}: connections refused after offering their keys {flood.refused}, closed before (MaxStartups, "
              f"PerSourceMaxStartups) {flood.closed_at_door}", flush=True)  # fmt: skip
        assert not flood.got_in, f"{flood.got_in} connections with random keys got in"
    finally:
        gateway.remove()
        hub.stop()
    return rows


def taken(rows: list[dict]) -> float:
    """The highest rate sent while /hub/health's p95 stayed under the limit (and every lower one did too)."""
    best = 0.0
    for row in rows:
        if row["p95"] >= HEALTH_LIMIT_MS:
            break
        best = max(best, row["sent"])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000, help="users with keys on the hub (default 1000)")
    parser.add_argument("--keys", type=int, default=5, help="keys per user (default 5)")
    parser.add_argument("--seconds", type=float, default=8, help="seconds per rate (default 8)")
    parser.add_argument("--rates", default="2,5,10,20,40,80,160", help="offers per second to try, in order")
    parser.add_argument("--sources", type=int, default=32, help="addresses of the last way's flood (default 32)")
    parser.add_argument("--before", default=BEFORE, help=f"the commit measured as 'before' (default {BEFORE})")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    client = harness.docker_client()
    harness.require_image(client)
    tmp = Path(tempfile.mkdtemp(prefix="devdock-gateway-flood-"))
    old = old_tree(args.before, tmp / "before-tree")
    results = {}
    try:
        ways = [("before", old, 1), ("after", None, 1), (f"after, {args.sources} addresses", None, args.sources)]
        for way, tree, sources in ways:
            results[way] = measure(way, client, tmp, args, tree, sources)
    finally:
        harness.cleanup(client)

    print()
    print(f"machine: {machine()}")
    print(f"{args.users} users x {args.keys} keys; {KEYS_PER_CONNECTION} random keys offered per connection; "
          f"{args.seconds:g} s per rate; /hub/health every 50 ms: its 95th percentile, and the lookups the hub "
          "answered per second")  # fmt: skip
    ways = list(results)
    rows = [(f"{rate:g}", *(f"{r['p95']:.0f} ms ({r['lookups']:.0f}/s)" for r in (results[w][i] for w in ways)))
            for i, rate in enumerate(args.rates)]  # fmt: skip
    print(table(rows, ("offers/s asked", *ways)))
    print()
    before = taken(results["before"])
    summary = []
    for way in ways:
        value = taken(results[way])
        if before:
            ratio = f"{value / before:.1f}x"
        else:  # not even the lowest rate tried: "before" takes less than that
            ratio = f"> {value / args.rates[0]:.0f}x (before: < {args.rates[0]:g}/s)" if value else "-"
        times = results[way][0]["lookup_ms"]  # at the lowest rate: what one lookup costs, without a queue
        summary.append((way, f"{value:.0f}", ratio, f"{median(times):.1f} ms"))
    print(f"offers per second taken while /hub/health's p95 stays under {HEALTH_LIMIT_MS} ms (the highest rate tried "
          "is a ceiling of this benchmark, not of the gateway):")  # fmt: skip
    print(table(summary, ("way", "offers/s", "vs before", f"one lookup at {args.rates[0]:g}/s, median")))


if __name__ == "__main__":
    main()

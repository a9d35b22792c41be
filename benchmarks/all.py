"""Every benchmark in one command, then the issue's targets against what this run measured.

    .venv/bin/python benchmarks/all.py [--quick]

Runs spawn (with plain homes, then with the shipped 50 GiB homes), burst, footprint, relay, stream, ports and ssh
one after the other (never in parallel: they share the machine), prints each one's own table as it goes, saves the
outputs under artifacts/benchmarks/, and ends with one table: each target, what this run measured, and whether it
is met. ``--quick`` uses fewer
rounds (a smoke run; the numbers in docs/performance.md come from the defaults).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from common import ROOT, machine, table

HERE = Path(__file__).resolve().parent
OUT = ROOT / "artifacts" / "benchmarks"

#: (name, script, full arguments, quick arguments)
RUNS = [
    ("spawn", "spawn.py", ["-n", "5"], ["-n", "2"]),
    ("spawn-50g", "spawn.py", ["-n", "6", "--home-size", "50G"], ["-n", "2", "--home-size", "50G"]),
    ("burst", "burst.py", ["-n", "20"], ["-n", "10"]),
    ("footprint", "footprint.py", ["-n", "3", "--settle", "10"], ["-n", "1", "--settle", "5"]),
    ("relay", "relay.py", ["--rounds", "3"], ["--rounds", "1"]),
    ("stream", "stream.py", ["--rounds", "2"], ["--rounds", "1", "--seconds", "8", "--keys", "8"]),
    ("ports", "ports.py", [], ["--sizes", "0", "10", "--allocations", "3"]),
    ("ssh", "ssh.py", ["-n", "30", "--mib", "0"], ["-n", "5", "--mib", "0"]),
]

#: (run, table row, which column, how the target reads, test, unit of the shown value)
TARGETS = [
    ("spawn", "spawn -> ready", -1, "<= 0.6x", lambda r: r <= 0.6, "x"),
    ("spawn", "spawn -> first desktop frame drawn", -1, "<= 0.6x", lambda r: r <= 0.6, "x"),
    ("spawn", "stop", -1, "<= 0.5x", lambda r: r <= 0.5, "x"),
    # issue 35: with the shipped defaults (every home a 50 GiB filesystem image)
    ("spawn-50g", "spawn -> ready", -1, "<= 0.4x", lambda r: r <= 0.4, "x"),
    ("spawn-50g", "spawn -> first desktop frame drawn", -1, "<= 0.4x", lambda r: r <= 0.4, "x"),
    ("burst", "failures (of", 2, "0 (devdock)", lambda r: r == 0, ""),
    ("burst", "makespan (servers that started)", -1, "<= 0.5x", lambda r: r <= 0.5, "x"),
    ("footprint", "idle desktop session", -1, "<= 0.9x", lambda r: r <= 0.9, "x"),
    ("relay", "MB/s", -1, ">= 0.7x direct", lambda r: r >= 0.7, "x"),
    ("stream", "frames shown per second", -1, ">= 2x noVNC", lambda r: r >= 2, "x"),
    ("stream", "bytes per second", -1, "<= 1x noVNC", lambda r: r <= 1, "x"),
    # issue 35: the first connection through the gateway, over the published port's
    ("ssh", "gateway", 3, "<= +100 ms", lambda r: r <= 100, " ms"),
]


def cell(output: str, row: str, column: int) -> float | None:
    """A number from a printed table: the row whose first cell starts with ``row``, the given column."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[0].startswith(row):
            match = re.search(r"[-+]?\d+(\.\d+)?", cells[column])
            return float(match.group()) if match else None
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    outputs, failed = {}, []
    for name, script, full, quick in RUNS:
        command = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"\n=== {' '.join(command[1:])}", flush=True)
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        text = result.stdout + result.stderr
        print(text, flush=True)
        (OUT / f"{name}.txt").write_text(text)
        outputs[name] = text
        if result.returncode:
            failed.append(name)
    rows = []
    for name, row, column, target, test, unit in TARGETS:
        value = cell(outputs.get(name, ""), row, column)
        shown = "-" if value is None else (f"{value:.2f}x" if unit == "x" else f"{value:g}{unit}")
        rows.append((f"{name}: {row}", shown, target, "-" if value is None else test(value)))
    latency = re.search(r"latency added by the relay: ([\d.]+) ms", outputs.get("relay", ""))
    if latency:
        added = float(latency.group(1))
        rows.append(("relay: latency added by the relay", f"{added:.2f} ms", "<= 1 ms", added <= 1.0))
    selkies = re.search(r"Selkies key to glyph, median: ([\d.]+) ms; CPU: ([\d.]+) cores", outputs.get("stream", ""))
    if selkies:
        latency_ms, cores = float(selkies.group(1)), float(selkies.group(2))
        rows.append(("stream: Selkies key to glyph", f"{latency_ms:.0f} ms", "< 50 ms", latency_ms < 50))
        rows.append(("stream: Selkies CPU in the container", f"{cores:.2f} cores", "<= 1 core", cores <= 1))
    print(f"\nmachine: {machine()}{' (quick run)' if args.quick else ''}")
    print(table(rows, ("target", "this run", "target", "met")))
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)} (outputs in {OUT})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

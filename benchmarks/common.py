"""Shared helpers for the benchmarks: a real engine and real hubs, from the test harness."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import harness  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    return f"{platform.node()}: {cpu}, {len(os.sched_getaffinity(0))} cores, {mem} GiB, Docker {docker}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


PLAIN = "plain DockerSpawner"
DEVDOCK = "devdock"


@contextmanager
def side_by_side(tag: str, **devdock_env: str) -> Iterator[dict[str, harness.Hub]]:
    """Two running hubs on one engine and image: plain DockerSpawner and devdock (``devdock_env``: settings of
    devdock's hub, e.g. ``DEVDOCK_HOME_SIZE="50G"``, the shipped default); cleaned up afterwards."""
    client = harness.docker_client()
    harness.require_image(client)
    tmp = Path(tempfile.mkdtemp(prefix=f"devdock-{tag}-"))
    hubs = {
        PLAIN: harness.Hub(client, tmp / "plain", ROOT / "benchmarks/plain_dockerspawner_config.py"),
        DEVDOCK: harness.Hub(client, tmp / "devdock", **devdock_env),
    }
    try:
        for hub in hubs.values():
            hub.start()
        yield hubs
    finally:
        for hub in hubs.values():
            hub.stop()
        harness.cleanup(client)


def interleaved(rounds: int, hubs: dict[str, harness.Hub], run: Callable[[harness.Hub, int], dict]) -> dict:
    """``run(hub, round)`` for each hub, ``rounds`` times, alternating which goes first; results by name."""
    results: dict[str, list[dict]] = {name: [] for name in hubs}
    order = list(hubs)
    for i in range(rounds):
        for name in order if i % 2 == 0 else list(reversed(order)):
            result = run(hubs[name], i)
            results[name].append(result)
            shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())
            print(f"round {i + 1} {name:19s} {shown}", flush=True)
    return results


def compare(results: dict, metrics: list[tuple[str, str, str]], note: str) -> None:
    """Print medians of each metric ``(key, label, unit)`` for both spawners and the ratio."""
    rows = []
    for key, label, unit in metrics:
        b = median([r[key] for r in results[PLAIN]])
        o = median([r[key] for r in results[DEVDOCK]])
        rows.append((label, f"{b:.2f} {unit}", f"{o:.2f} {unit}", f"{o / b:.2f}x" if b else "-"))
    print()
    print(f"machine: {machine()}")
    print(note)
    print(table(rows, ("metric", PLAIN, DEVDOCK, "devdock / plain")))


__all__ = ["harness", "machine", "median", "table", "ROOT", "side_by_side", "interleaved", "compare"]

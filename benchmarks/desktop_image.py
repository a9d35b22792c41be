"""The desktop image before and after a change: spawn -> first desktop frame, and idle memory, side by side.

    .venv/bin/python benchmarks/desktop_image.py --before devdock/desktop:before [--after devdock/desktop:latest]

Two devdock hubs on one engine, one per image, spawns interleaved (which goes first alternates), one unmeasured
warm-up each; medians, and after/before ratios. Build the "before" image from an earlier commit, e.g.
``git worktree add /tmp/before <commit> && docker build -f images/desktop/Dockerfile -t devdock/desktop:before
/tmp/before/images``. The desktop issue's budget: neither figure more than 10 % worse.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import harness, machine, median, table
from footprint import one as idle_memory
from spawn import one_round as spawn_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the earlier desktop image (a tag)")
    parser.add_argument("--after", default="devdock/desktop:latest", help="the image to compare with it")
    parser.add_argument("-n", type=int, default=5, help="rounds per image (default 5)")
    parser.add_argument("--settle", type=float, default=10, help="seconds before memory is read (default 10)")
    args = parser.parse_args()

    client = harness.docker_client()
    images = {"before": args.before, "after": args.after}
    for image in images.values():
        harness.require_image(client, image)
    tmp = Path(tempfile.mkdtemp(prefix="devdock-desktop-image-"))
    hubs = {name: harness.Hub(client, tmp / name, DEVDOCK_IMAGE=image) for name, image in images.items()}
    results: dict[str, list[dict]] = {name: [] for name in hubs}
    try:
        for hub in hubs.values():
            hub.start()
            spawn_round(hub, f"{hub.data_dir.name}-warm")  # users differ: both hubs name containers alike
        order = list(hubs)
        for i in range(args.n):
            for name in order if i % 2 == 0 else list(reversed(order)):
                hub = hubs[name]
                result = {**spawn_round(hub, f"{name}-img{i}"), **idle_memory(hub, f"{name}-mem{i}", args.settle)}
                results[name].append(result)
                print(f"  {name} round {i}: frame {result['frame']:.2f} s, desktop {result['desktop']:.0f} MiB")
    finally:
        for hub in hubs.values():
            hub.stop()
        harness.cleanup(client)

    rows = []
    for key, label, unit in (
        ("ready", "spawn -> ready", "s"),
        ("frame", "spawn -> first desktop frame drawn", "s"),
        ("lab", "idle, JupyterLab only", "MiB"),
        ("desktop", "idle desktop session", "MiB"),
    ):
        b, a = median([r[key] for r in results["before"]]), median([r[key] for r in results["after"]])
        rows.append((label, f"{b:.2f} {unit}", f"{a:.2f} {unit}", f"{a / b:.2f}x"))
    sizes = {name: client.images.get(image).attrs["Size"] / 2**20 for name, image in images.items()}
    rows.append(("image size", f"{sizes['before']:.0f} MiB", f"{sizes['after']:.0f} MiB",
                 f"{sizes['after'] / sizes['before']:.2f}x"))  # fmt: skip
    print()
    print(f"machine: {machine()}")
    print(f"{args.n} rounds per image, interleaved; medians; before = {args.before}, after = {args.after}")
    print(table(rows, ("metric", "before", "after", "after / before")))


if __name__ == "__main__":
    main()

"""One home-image step (homes with a size limit): a one-shot helper container per step vs ``docker exec`` in the
hub's resident helper, alternating, in one run.

    .venv/bin/python benchmarks/home_helper.py [-n 8] [--image devdock/hub:latest]

Both run the same ``devdock-home-image release`` (a step that finds nothing to release: what is measured is the
helper's own cost) with the same confinement (no network, ``MKNOD`` only, the loop devices, a read-only root, no new
privileges, the folder of home images bound). A start takes two steps (attach, release).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import harness, machine, median, table

from devdock_spawner import homeimage


def host_config(api, folder: str) -> dict:
    return api.create_host_config(
        binds={folder: {"bind": folder, "mode": "rw"}},
        network_mode="none",
        cap_drop=["ALL"],
        cap_add=["MKNOD"],
        devices=["/dev/loop-control:/dev/loop-control:rwm"],
        device_cgroup_rules=[f"b {homeimage.LOOP_MAJOR}:* rwm"],
        security_opt=["no-new-privileges:true"],
        read_only=True,
        init=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=8, help="steps of each kind (default 8)")
    parser.add_argument("--image", default="devdock/hub:latest", help="the helper's image (default devdock/hub)")
    args = parser.parse_args()
    api = harness.docker_client().api
    labels = {harness.RUN_LABEL: harness.RUN_ID}
    folder = tempfile.mkdtemp(prefix="devdock-home-helper-")
    step = ["devdock-home-image", "release", f"{folder}/bench.dev"]

    def one_shot() -> None:
        container = api.create_container(args.image, entrypoint=step, host_config=host_config(api, folder),
                                         labels=labels)  # fmt: skip
        try:
            api.start(container)
            assert api.wait(container)["StatusCode"] == 0, api.logs(container)
            api.logs(container)
        finally:
            api.remove_container(container, force=True)

    helper = api.create_container(args.image, entrypoint=["sleep", "infinity"], host_config=host_config(api, folder),
                                  labels=labels)  # fmt: skip
    api.start(helper)

    def resident() -> None:
        run = api.exec_create(helper, step)
        api.exec_start(run["Id"], demux=True)
        assert api.exec_inspect(run["Id"])["ExitCode"] == 0

    times: dict[str, list[float]] = {"one-shot container": [], "exec in the resident helper": []}
    kinds = {"one-shot container": one_shot, "exec in the resident helper": resident}
    try:
        for kind in kinds.values():  # one unmeasured warm-up each
            kind()
        for i in range(args.n):
            for name in list(kinds) if i % 2 == 0 else list(reversed(kinds)):
                t0 = time.perf_counter()
                kinds[name]()
                times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        api.remove_container(helper, force=True)
    base = median(times["one-shot container"])
    rows = [(name, f"{median(values):.0f} ms", f"{median(values) / base:.2f}x") for name, values in times.items()]
    print(f"machine: {machine()}")
    print(f"one home-image step, median of {args.n}, alternating")
    print(table(rows, ("helper", "one step", "ratio")))


if __name__ == "__main__":
    main()

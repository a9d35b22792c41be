"""Spawn -> ready and stop times: DevDockSpawner vs plain DockerSpawner, same image, interleaved.

    .venv/bin/python benchmarks/spawn.py [-n 5]

Two hubs run side by side on the same engine and image; spawns alternate between them (and which
goes first alternates too), so that a warm cache or a busy moment favours neither. Each round:
REST spawn until the hub reports the server ready, then, as a user who opens the desktop at once, the
time until the desktop's VNC server answers through the proxy (RFB handshake) and until the first frame
with the desktop drawn on it (many colours, not a bare X screen), then REST stop until the hub no longer
lists the server.
"""

from __future__ import annotations

import argparse
import time

from common import compare, harness, interleaved, side_by_side
from rfb_client import RFB, WebSocketStream, painted


def one_round(hub: harness.Hub, user: str) -> dict:
    t0 = time.perf_counter()
    hub.spawn(user)
    ready = time.perf_counter() - t0
    token = hub.token(user)
    ws = harness.ws_connect(hub.server_url(user) + "desktop-websockify/", token)
    try:
        rfb = RFB(WebSocketStream(ws))  # the VNC server answered
        desktop = time.perf_counter() - t0
        deadline = time.monotonic() + 60
        while not painted(rfb):  # the first frame with the desktop drawn on it
            assert time.monotonic() < deadline, "the desktop was not drawn within 60 s"
            time.sleep(0.1)
        frame = time.perf_counter() - t0
    finally:
        ws.close()
    t1 = time.perf_counter()
    hub.stop_server(user)
    stop = time.perf_counter() - t1
    return {"ready": ready, "desktop": desktop, "frame": frame, "stop": stop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=5, help="rounds per spawner (default 5)")
    parser.add_argument(
        "--home-size",
        default="0",
        help="devdock's home_size (shipped default 50G: every home a filesystem image; default 0: plain volumes)",
    )
    args = parser.parse_args()

    with side_by_side("spawn", DEVDOCK_HOME_SIZE=args.home_size) as hubs:
        for hub in hubs.values():  # one unmeasured warm-up each (page cache, image layers)
            one_round(hub, "warmup")
        results = interleaved(args.n, hubs, lambda hub, i: one_round(hub, f"bench{i}"))
    compare(
        results,
        [
            ("ready", "spawn -> ready", "s"),
            ("desktop", "spawn -> desktop answers", "s"),
            ("frame", "spawn -> first desktop frame drawn", "s"),
            ("stop", "stop", "s"),
        ],
        f"rounds: {args.n} per spawner, interleaved; medians; devdock's home_size {args.home_size}",
    )


if __name__ == "__main__":
    main()

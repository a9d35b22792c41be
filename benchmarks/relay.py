"""The desktop's relay: the VNC unix socket directly vs through the Hub's proxy (authenticated websocket).

    .venv/bin/python benchmarks/relay.py [--frames 20] [--pings 50] [--rounds 3]

One devdock server; the same RFB client (benchmarks/rfb_client.py: Raw full frames, then 16x16
round trips) runs inside the container on the VNC unix socket ("direct") and on this host through
configurable-http-proxy -> jupyterhub-singleuser -> jupyter-server-proxy's raw socket relay ("hub
proxy", with the user's token, as the browser does). Rounds alternate. Printed: frames/s, MB/s and
round-trip medians, with the ratio proxy/direct.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

from common import ROOT, harness, machine, median, table
from rfb_client import RFB, WebSocketStream, measure


def copy_client_into(container) -> None:
    data = (ROOT / "benchmarks" / "rfb_client.py").read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("rfb_client.py")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    container.put_archive("/tmp", buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    client = harness.docker_client()
    harness.require_image(client)
    hub = harness.Hub(client, Path(tempfile.mkdtemp(prefix="devdock-stream-")))
    results: dict[str, list[dict]] = {"direct": [], "single-user": [], "hub proxy": []}
    try:
        hub.start()
        hub.spawn("streamer")
        token = hub.token("streamer")
        url = hub.server_url("streamer") + "desktop-websockify/"
        container = hub.container("streamer")
        # The single-user server itself, bypassing configurable-http-proxy: where the relay's cost splits.
        address = container.attrs["NetworkSettings"]["Networks"][hub.network]["IPAddress"]
        urls = {"hub proxy": url, "single-user": f"http://{address}:8888/user/streamer/desktop-websockify/"}
        copy_client_into(container)
        warm = harness.ws_connect(url, token)  # starts the VNC server
        warm.recv()
        warm.close()
        time.sleep(3)  # let the desktop draw, so frames are real pixels
        for r in range(args.rounds):
            modes = ["direct", "single-user", "hub proxy"]
            for mode in modes if r % 2 == 0 else modes[::-1]:
                if mode == "direct":
                    cmd = [
                        "/opt/devdock/venv/bin/python", "/tmp/rfb_client.py",
                        "--unix", "/tmp/jupyter-server-proxy-*/socket",
                        "--frames", str(args.frames), "--pings", str(args.pings),
                    ]  # fmt: skip
                    out = container.exec_run(cmd, user="1000")
                    result = json.loads(out.output.decode().strip().splitlines()[-1])
                else:
                    ws = harness.ws_connect(urls[mode], token)
                    try:
                        result = measure(RFB(WebSocketStream(ws)), args.frames, args.pings)
                    finally:
                        ws.close()
                results[mode].append(result)
                print(
                    f"round {r + 1} {mode:9s} {result['frames_per_s']:.1f} frames/s "
                    f"{result['mb_per_s']:.0f} MB/s rtt {result['rtt_ms_median']:.2f} ms ({result['size']})",
                    flush=True,
                )
    finally:
        hub.stop()
        harness.cleanup(client)

    d, s, p = results["direct"], results["single-user"], results["hub proxy"]
    rows = []
    for key, label, fmt in (
        ("frames_per_s", "full frames/s (Raw)", "{:.1f}"),
        ("mb_per_s", "MB/s", "{:.0f}"),
        ("rtt_ms_median", "16x16 round trip, median ms", "{:.2f}"),
        ("rtt_ms_p90", "16x16 round trip, p90 ms", "{:.2f}"),
    ):
        dm, sm, pm = (median([x[key] for x in results_]) for results_ in (d, s, p))
        rows.append((label, fmt.format(dm), fmt.format(sm), fmt.format(pm), f"{sm / dm:.2f}x", f"{pm / dm:.2f}x"))
    added = median([x["rtt_ms_median"] for x in p]) - median([x["rtt_ms_median"] for x in d])
    print()
    print(f"machine: {machine()}")
    print(f"{args.rounds} rounds, {args.frames} frames and {args.pings} round trips each; medians")
    headers = ("metric", "direct (unix socket)", "single-user server", "through hub proxy", "s-u / direct")
    print(table(rows, (*headers, "proxy / direct")))
    print(f"latency added by the relay: {added:.2f} ms")


if __name__ == "__main__":
    main()

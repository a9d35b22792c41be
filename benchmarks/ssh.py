"""SSH through the gateway vs straight to the server's published port, in one run, on one server.

    .venv/bin/python benchmarks/ssh.py [-n 30] [--mib 1024]

One devdock hub with ``ssh_mode = "both"`` (the server publishes its own port *and* is reachable through the
gateway, images/ssh-gateway), one server, one key. Measured with the real OpenSSH client, alternating the two
ways so that neither gets a warmer machine: connection setup (``ssh ... true``, n times: key exchange, login,
a command, close) and ``scp`` of a file of --mib MiB up to the server (3 times each). Printed side by side with
the difference (setup) and the ratio (throughput). The issue's goal: at most +50 ms setup, at least 0.8x.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import harness, machine, table


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="connections per way (default 30)")
    parser.add_argument("--mib", type=int, default=1024, help="size of the scp file in MiB (default 1024)")
    args = parser.parse_args()
    client = harness.docker_client()
    harness.require_image(client)
    tmp = Path(tempfile.mkdtemp(prefix="devdock-ssh-bench-"))
    token, gw_port = secrets.token_hex(16), harness.free_port()
    hub = harness.Hub(
        client, tmp / "hub", DEVDOCK_SSH_MODE="both", DEVDOCK_SSH_GATEWAY_TOKEN=token,
        DEVDOCK_SSH_GATEWAY_PORT=str(gw_port),
    )  # fmt: skip
    gateway = harness.Gateway(client, hub.url, token, gw_port, tmp / "gateway-keys")
    (tmp / "gateway-keys").mkdir()
    try:
        hub.start()
        gateway.start()
        key, line = harness.keygen(tmp, "bench")
        hub.save_ssh_keys("bench", line)
        hub.spawn("bench")
        port = hub.server_state("bench")["ssh_port"]
        login = hub.container("bench").exec_run(["id", "-un", "1000"]).output.decode().strip()
        common = ["-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                  "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]  # fmt: skip
        relay = " ".join(["ssh", "-p", str(gw_port), *common, "devdock@127.0.0.1", "bench"])
        # The same, with the connection to the gateway kept open by the client (OpenSSH's ControlMaster): each
        # new ssh is a session on it, so only the login to the server itself is left (docs/ssh.md).
        keep = ["-o", "ControlMaster=auto", "-o", f"ControlPath={tmp}/cm-%%C", "-o", "ControlPersist=120"]
        kept = " ".join(["ssh", "-p", str(gw_port), *common, *keep, "devdock@127.0.0.1", "bench"])
        ways = {
            "published port": ["-p", str(port)],
            "gateway": ["-o", f"ProxyCommand={relay}"],
            "gateway, kept": ["-o", f"ProxyCommand={kept}"],
        }
        target = {w: f"{login}@devdock" for w in ways} | {"published port": f"{login}@127.0.0.1"}
        setup = {w: [] for w in ways}
        for _ in range(3):  # warm-up
            for w, opts in ways.items():
                timed(["ssh", *common, *opts, target[w], "true"])
        for _ in range(args.n):
            for w, opts in ways.items():
                setup[w].append(timed(["ssh", *common, *opts, target[w], "true"]) * 1000)
        blob = tmp / "blob"
        subprocess.run(["dd", "if=/dev/urandom", f"of={blob}", "bs=1M", f"count={args.mib}"], capture_output=True,
                       check=True)  # fmt: skip
        rate = {w: [] for w in ways}
        for _ in range(3):
            for w, opts in ways.items():
                scp_opts = ["-P", str(port)] if w == "published port" else opts
                seconds = timed(["scp", *common, *scp_opts, str(blob), f"{target[w]}:blob"])
                rate[w].append(args.mib / seconds)
    finally:
        gateway.remove()
        hub.stop()
        harness.cleanup(client)

    direct, up_direct = statistics.median(setup["published port"]), statistics.median(rate["published port"])
    rows = []
    for way in ("gateway", "gateway, kept"):
        through, up_through = statistics.median(setup[way]), statistics.median(rate[way])
        setup_cells = (f"{direct:.0f} ms", f"{through:.0f} ms", f"{through - direct:+.0f} ms")
        scp_cells = (f"{up_direct:.0f} MiB/s", f"{up_through:.0f} MiB/s", f"{up_through / up_direct:.2f}x")
        rows.append((way, *setup_cells, *scp_cells))
    print()
    print(f"machine: {machine()}")
    print(f"connection setup: median of {args.n} (ssh ... true); scp: {args.mib} MiB up, median of 3")
    header = ("through", "setup, port", "setup, gateway", "difference", "scp, port", "scp, gateway", "ratio")
    print(table(rows, header))


if __name__ == "__main__":
    main()

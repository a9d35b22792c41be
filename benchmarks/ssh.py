"""SSH through the gateway vs straight to the server's published port, in one run, on one server.

    .venv/bin/python benchmarks/ssh.py [-n 30] [--mib 1024] [--before COMMIT]

One devdock hub with ``ssh_mode = "both"`` (the server publishes its own port *and* is reachable through the
gateway, images/ssh-gateway), one server, one key, and two gateways in front of it: this checkout's image, and the
same image with the gateway's programs and sshd_config of ``--before`` mounted over it (issue 35's starting point by
default; ``--before ""``: none). Measured with the real OpenSSH client, alternating all the ways in every round so
that none gets a warmer machine: connection setup (``ssh ... true``, n times: key exchange, login, a command,
close) and ``scp`` of a file of --mib MiB up to the server (3 times each; ``--mib 0``: none). Printed side by side
with the difference (setup) and the ratio (throughput). The issue's goals: a first connection at most +100 ms
over the published port (issue 35), scp at least 0.8x.
"""

from __future__ import annotations

import argparse
import io
import secrets
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from common import ROOT, harness, machine, table

#: The commit before issue 35's work on the gateway's first connection.
BEFORE = "7b44f23"
#: The gateway's files, mounted from --before over the current image: (name, folder in the image).
GATEWAY_FILES = [
    ("devdock-gateway-keys", "/usr/local/bin/"),
    ("devdock-gateway-connect", "/usr/local/bin/"),
    ("gatewaylib.py", "/usr/local/lib/devdock-gateway/"),
    ("sshd_config", "/etc/devdock-gateway/"),
]


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - t0


def old_gateway_files(commit: str, into: Path) -> dict:
    """``commit``'s images/ssh-gateway, unpacked into ``into``, as docker-py's volumes over the current image."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "images/ssh-gateway"], capture_output=True,
                             check=True)  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    folder = into / "images/ssh-gateway"
    return {str(folder / name): {"bind": f"{dest}{name}", "mode": "ro"} for name, dest in GATEWAY_FILES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="connections per way (default 30)")
    parser.add_argument("--mib", type=int, default=1024, help="size of the scp file in MiB (default 1024; 0: none)")
    parser.add_argument("--before", default=BEFORE, help=f"the gateway to compare with (default {BEFORE}; '': none)")
    args = parser.parse_args()
    client = harness.docker_client()
    harness.require_image(client)
    tmp = Path(tempfile.mkdtemp(prefix="devdock-ssh-bench-"))
    token, gw_port, old_port = secrets.token_hex(16), harness.free_port(), harness.free_port()
    hub = harness.Hub(
        client, tmp / "hub", DEVDOCK_SSH_MODE="both", DEVDOCK_SSH_GATEWAY_TOKEN=token,
        DEVDOCK_SSH_GATEWAY_PORT=str(gw_port),
    )  # fmt: skip
    gateways = [harness.Gateway(client, hub.url, token, gw_port, tmp / "gateway-keys")]
    if args.before:
        old_files = old_gateway_files(args.before, tmp / "before")
        gateways.append(harness.Gateway(client, hub.url, token, old_port, tmp / "old-keys", volumes=old_files))
    for gateway in gateways:
        Path(gateway.keys_dir).mkdir()
    try:
        hub.start()
        for gateway in gateways:
            gateway.start()
        key, line = harness.keygen(tmp, "bench")
        hub.save_ssh_keys("bench", line)
        hub.spawn("bench")
        port = hub.server_state("bench")["ssh_port"]
        login = hub.container("bench").exec_run(["id", "-un", "1000"]).output.decode().strip()
        common = ["-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                  "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]  # fmt: skip

        def relay(gw_port: int, *options: str) -> list[str]:
            command = " ".join(["ssh", "-p", str(gw_port), *common, *options, "devdock@127.0.0.1", "bench"])
            return ["-o", f"ProxyCommand={command}"]

        # The same, with the connection to the gateway kept open by the client (OpenSSH's ControlMaster): each
        # new ssh is a session on it, so only the login to the server itself is left (docs/ssh.md).
        keep = ["-o", "ControlMaster=auto", "-o", f"ControlPath={tmp}/cm-%%C", "-o", "ControlPersist=120"]
        ways = {"published port": ["-p", str(port)], "gateway": relay(gw_port)}
        if args.before:
            ways[f"gateway before ({args.before})"] = relay(old_port)
        ways["gateway, client keeps its connection"] = relay(gw_port, *keep)
        target = {w: f"{login}@devdock" for w in ways} | {"published port": f"{login}@127.0.0.1"}
        setup = {w: [] for w in ways}
        for _ in range(3):  # warm-up
            for w, opts in ways.items():
                timed(["ssh", *common, *opts, target[w], "true"])
        for _ in range(args.n):
            for w, opts in ways.items():
                setup[w].append(timed(["ssh", *common, *opts, target[w], "true"]) * 1000)
        rate = {w: [] for w in ways}
        if args.mib:
            blob = tmp / "blob"
            subprocess.run(["dd", "if=/dev/urandom", f"of={blob}", "bs=1M", f"count={args.mib}"],
                           capture_output=True, check=True)  # fmt: skip
            for _ in range(3):
                for w, opts in ways.items():
                    scp_opts = ["-P", str(port)] if w == "published port" else opts
                    seconds = timed(["scp", *common, *scp_opts, str(blob), f"{target[w]}:blob"])
                    rate[w].append(args.mib / seconds)
    finally:
        for gateway in gateways:
            gateway.remove()
        hub.stop()
        harness.cleanup(client)

    direct = statistics.median(setup["published port"])
    up_direct = statistics.median(rate["published port"]) if args.mib else float("nan")
    rows = []
    for way in [w for w in ways if w != "published port"]:
        through = statistics.median(setup[way])
        up_through = statistics.median(rate[way]) if args.mib else float("nan")
        setup_cells = (f"{direct:.0f} ms", f"{through:.0f} ms", f"{through - direct:+.0f} ms")
        scp_cells = (f"{up_direct:.0f} MiB/s", f"{up_through:.0f} MiB/s", f"{up_through / up_direct:.2f}x")
        rows.append((way, *setup_cells, *scp_cells))
    print()
    print(f"machine: {machine()}")
    print(f"connection setup: median of {args.n} (ssh ... true); scp: {args.mib} MiB up, median of 3")
    header = ("through", "setup, port", "setup, gateway", "difference", "scp, port", "scp, gateway", "ratio")
    print(table(rows, header))
    print("goal (issue 35): a first connection through the gateway at most +100 ms over the published port")


if __name__ == "__main__":
    main()

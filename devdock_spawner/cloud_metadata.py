"""Users' containers never reach the cloud's metadata service (pure; the spawner runs the script it builds).

On a cloud VM, ``http://169.254.169.254/`` answers anyone on the machine with the VM's identity: its IAM role's
credentials, its startup scripts and their secrets. A user's container routes there through the host like any
other address, so Zero to JupyterHub blocks it by default; so does devdock.

How: one ``iptables`` rule per subnet of devdock's network in Docker's ``DOCKER-USER`` chain (the chain Docker
keeps for its users' rules and evaluates before its own, `docs.docker.com/engine/network/packet-filtering-firewalls
<https://docs.docker.com/engine/network/packet-filtering-firewalls/#add-iptables-policies-before-dockers-rules>`_)::

    -s 172.18.0.0/16 -d 169.254.169.254/32 -m comment --comment "devdock: no cloud metadata from devdock" -j REJECT

``REJECT`` rather than ``DROP``: a program in the container is told at once ("connection refused") instead of
waiting for a timeout. The host itself (the hub, cloud-init, the machine's own agents) is not affected: only
packets from the network's subnet match. The hub installs the rule through a one-shot helper container on the
host's network with ``NET_ADMIN`` (:meth:`~devdock_spawner.spawner.DevDockSpawner.ensure_cloud_metadata_blocked`),
in whichever of ``iptables-nft`` and ``iptables-legacy`` holds Docker's chain; the script adds a rule only when it
is not there yet, so every hub start may run it again.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

#: The metadata address of AWS, Azure, GCP, OpenStack, Oracle, DigitalOcean and others.
DEFAULT_ADDRESSES = ("169.254.169.254",)
#: The chain Docker keeps for its users' rules, evaluated first in ``FORWARD``.
CHAIN = "DOCKER-USER"
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def ipv4_networks(values) -> list[str]:
    """``["172.18.0.0/16"]`` from a network's IPAM subnets or from addresses (``169.254.169.254`` → ``/32``);
    IPv6 entries are left out (the rule is an ``iptables`` one; ``ip6tables`` would be its IPv6 twin)."""
    found = []
    for value in values:
        network = ipaddress.ip_network(str(value).strip(), strict=False)
        if network.version == 4 and str(network) not in found:
            found.append(str(network))
    return found


def comment(network: str) -> str:
    """The rule's comment: says who added it and for which network (so an admin can find and remove it)."""
    if not _NETWORK_NAME.fullmatch(network):
        raise ValueError(f"{network!r} is not a Docker network name")
    return f"devdock: no cloud metadata from {network}"


def rules(network: str, subnets, addresses=DEFAULT_ADDRESSES) -> list[list[str]]:
    """The ``iptables`` rule specifications (after ``-A CHAIN``) that keep ``subnets`` from ``addresses``."""
    note = comment(network)
    return [
        ["-s", subnet, "-d", address, "-m", "comment", "--comment", note, "-j", "REJECT"]
        for subnet in ipv4_networks(subnets)
        for address in ipv4_networks(addresses)
    ]


def block_script(network: str, subnets, addresses=DEFAULT_ADDRESSES) -> str:
    """A POSIX shell script that adds :func:`rules` to ``DOCKER-USER`` unless they are there already.

    It uses ``iptables-nft`` when Docker's chain is there, else ``iptables-legacy`` (Debian's ``iptables`` has both),
    so it works whichever backend the host's Docker uses. It prints the backend it used; it exits 3 when neither
    has the chain (Docker does not manage iptables on this host) and 4 when there is nothing to block.
    """
    specs = rules(network, subnets, addresses)
    if not specs:
        return "echo 'devdock: no IPv4 subnet or address to block' >&2; exit 4\n"
    lines = [
        "set -u",
        'used=""',
        'have=""',
        "for ipt in iptables-nft iptables-legacy; do",
        # Legacy only when nft does not hold Docker's chain: listing it would load the legacy tables on the host.
        '    [ -z "$used" ] || break',
        '    command -v "$ipt" >/dev/null 2>&1 || continue',
        '    have="$have $ipt"',
        f'    "$ipt" -w 5 -n -L {CHAIN} >/dev/null 2>&1 || continue',
    ]
    for spec in specs:
        quoted = " ".join(shlex.quote(part) for part in spec)
        lines.append(f'    "$ipt" -w 5 -C {CHAIN} {quoted} 2>/dev/null || "$ipt" -w 5 -I {CHAIN} 1 {quoted} || exit 1')
    lines += [
        '    used="$used $ipt"',
        "done",
        '[ -n "$have" ] || { echo "this helper image has no iptables-nft or iptables-legacy: build devdock\'s'
        ' hub image again (scripts/build-images.sh hub)" >&2; exit 3; }',
        f'[ -n "$used" ] || {{ echo "no {CHAIN} chain in$have: does Docker manage iptables on this host?" >&2;'
        " exit 3; }",
        'echo "$used"',
    ]
    return "\n".join(lines) + "\n"


def blocked_pairs(listing: str, network: str) -> set[tuple[str, str]]:
    """``{(subnet, address)}`` that ``iptables -S DOCKER-USER`` shows devdock's rules rejecting for ``network``."""
    note = comment(network)
    found = set()
    for line in listing.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words[:2] != ["-A", CHAIN] or "REJECT" not in words or note not in words:
            continue
        source = words[words.index("-s") + 1] if "-s" in words else ""
        target = words[words.index("-d") + 1] if "-d" in words else ""
        if source and target:
            found.add((source, target))
    return found

"""The rule that keeps users' containers from the cloud's metadata service (tables).

The rule's effect is proven in tests/integration/test_cloud_metadata.py (network namespaces the test makes, and
the rule a real hub adds for its network); these tables pin what is built and read.
"""

from __future__ import annotations

import pytest

from devdock_spawner import cloud_metadata

NOTE = "devdock: no cloud metadata from devdock"


@pytest.mark.parametrize(
    ("subnets", "addresses", "expected"),
    [
        (["172.18.0.0/16"], ["169.254.169.254"], [("172.18.0.0/16", "169.254.169.254/32")]),
        (
            ["172.18.0.0/16", "fd00:dd::/64", "10.9.0.0/24"],
            ["169.254.169.254", "169.254.170.2/32"],
            [
                ("172.18.0.0/16", "169.254.169.254/32"),
                ("172.18.0.0/16", "169.254.170.2/32"),
                ("10.9.0.0/24", "169.254.169.254/32"),
                ("10.9.0.0/24", "169.254.170.2/32"),
            ],
        ),
        (["172.18.0.1/16"], ["fd00:ec2::254"], []),
    ],
    ids=["one-subnet", "ipv6-subnet-left-out-two-addresses", "ipv6-address-only"],
)
def test_cloud_metadata_rules_reject_each_subnet_to_each_address(subnets, addresses, expected):
    built = cloud_metadata.rules("devdock", subnets, addresses)
    assert [(r[r.index("-s") + 1], r[r.index("-d") + 1]) for r in built] == expected
    for rule in built:
        assert rule[-2:] == ["-j", "REJECT"] and NOTE in rule


def test_cloud_metadata_script_adds_each_rule_once_in_docker_user_of_the_backend_docker_uses():
    script = cloud_metadata.block_script("devdock", ["172.18.0.0/16"])
    assert "for ipt in iptables-nft iptables-legacy" in script
    check = "-C DOCKER-USER -s 172.18.0.0/16 -d 169.254.169.254/32 -m comment --comment "
    assert f"{check}'{NOTE}' -j REJECT 2>/dev/null ||" in script  # only when it is not there yet
    assert "-I DOCKER-USER 1 -s 172.18.0.0/16" in script  # first in the chain
    assert "exit 3" in script  # no DOCKER-USER anywhere: a failure, never silence
    assert "exit 4" in cloud_metadata.block_script("devdock", ["fd00::/64"])


@pytest.mark.parametrize(
    "bad",
    [("devdock; reboot", ["172.18.0.0/16"], ["169.254.169.254"]), ("devdock", ["x"], ["169.254.169.254"]),
     ("devdock", ["172.18.0.0/16"], ["$(reboot)"])],
    ids=["network-name", "subnet", "address"],
)  # fmt: skip
def test_cloud_metadata_script_refuses_what_is_not_a_network_name_or_address(bad):
    with pytest.raises(ValueError):
        cloud_metadata.block_script(*bad)


def test_cloud_metadata_listing_shows_the_networks_rules_only():
    listing = (
        "-N DOCKER-USER\n"
        f'-A DOCKER-USER -s 172.18.0.0/16 -d 169.254.169.254/32 -m comment --comment "{NOTE}" -j REJECT '
        "--reject-with icmp-port-unreachable\n"
        '-A DOCKER-USER -s 172.19.0.0/16 -d 169.254.169.254/32 -m comment --comment "devdock: no cloud metadata '
        'from other" -j REJECT --reject-with icmp-port-unreachable\n'
        f'-A DOCKER-USER -s 172.20.0.0/16 -d 169.254.169.254/32 -m comment --comment "{NOTE}" -j ACCEPT\n'
        "-A DOCKER-USER -j RETURN\n"
    )
    assert cloud_metadata.blocked_pairs(listing, "devdock") == {("172.18.0.0/16", "169.254.169.254/32")}

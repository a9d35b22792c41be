"""What a hub does with its objects that its database does not list as running (tables)."""

from __future__ import annotations

import pytest

from devdock_spawner.reconcile import Found, container_found, plan

RUNNING_KNOWN = Found("1", "devdock-alice", "alice/", running=True, gpus=("GPU-0",))
RUNNING_UNKNOWN = Found("2", "devdock-bob", "bob/", running=True, gpus=("GPU-1",), ssh_port=42001)
STOPPED_UNKNOWN = Found("3", "devdock-carol", "carol/", running=False)
STOPPED_KNOWN = Found("4", "devdock-alice_gpu", "alice/gpu", running=False)
ALL = [RUNNING_KNOWN, RUNNING_UNKNOWN, STOPPED_UNKNOWN, STOPPED_KNOWN]

# (id, database's running keys, policy, expected removed ids, expected kept-unknown ids)
CASES = [
    ("keep-default", {"alice/", "alice/gpu"}, "keep", ["3"], ["2"]),
    ("new-empty-database", set(), "keep", ["3", "4"], ["1", "2"]),
    ("remove-like-0.1", {"alice/", "alice/gpu"}, "remove", ["2", "3"], []),
    ("remove-with-empty-database", set(), "remove", ["1", "2", "3", "4"], []),
    ("no-database-touches-nothing", None, "remove", [], []),
    ("everything-known", {"alice/", "bob/", "carol/", "alice/gpu"}, "keep", [], []),
]


@pytest.mark.parametrize(("running", "policy", "removed", "kept"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reconciliation_plan(running, policy, removed, kept):
    decided = plan(ALL, running, policy)
    assert [f.id for f in decided.remove] == removed
    assert [f.id for f in decided.keep_unknown] == kept


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown_servers"):
        plan(ALL, set(), "delete-everything")


def test_a_docker_ps_entry_becomes_found():
    entry = {
        "Id": "abc",
        "Names": ["/devdock-bob"],
        "State": "running",
        "Labels": {"io.devdock.gpus": "GPU-1,GPU-2", "io.devdock.ssh-port": "42001"},
    }
    assert container_found(entry, "bob/", "io.devdock.gpus", "io.devdock.ssh-port") == Found(
        "abc", "devdock-bob", "bob/", True, ("GPU-1", "GPU-2"), 42001
    )

"""Stopping is not erasing: whose removal of a named server erases its home (a table of decisions).

The real hub's side (who asked, read from JupyterHub's request) is tests/integration/test_operations.py's
``test_removing_a_named_server_erases_its_home_only_when_an_admin_asks``.
"""

from __future__ import annotations

import pytest

from devdock_spawner.spawner_homes import may_erase_home

# (id, policy, server, requester, admin-level scope, erased)
REMOVALS = [
    ("culler-or-course-tool", "admin", "lab", "service:course-tool", False, False),
    ("owner-under-admin-policy", "admin", "lab", "user:ann", False, False),
    ("unknown-caller", "admin", "lab", "", False, False),
    ("admin", "admin", "lab", "user:root", True, True),
    ("admin-service", "admin", "lab", "service:devdock-ops", True, True),
    ("owner-under-owner-policy", "owner", "lab", "user:ann", False, True),
    ("another-user-under-owner-policy", "owner", "lab", "user:bob", False, False),
    ("service-named-like-the-owner", "owner", "lab", "service:ann", False, False),
    ("anyone", "anyone", "lab", "service:course-tool", False, True),
    ("default-server-goes-with-its-user", "admin", "", "service:course-tool", False, True),
]


@pytest.mark.parametrize(
    ("policy", "server", "requester", "admin", "erased"), [r[1:] for r in REMOVALS], ids=[r[0] for r in REMOVALS]
)
def test_removing_a_named_server_erases_its_home_only_by_an_admin_decision(policy, server, requester, admin, erased):
    assert may_erase_home(policy, "ann", server, requester, admin) is erased

"""One origin per user: what the hub derives from the URL users open, and the spawner's refusal on one origin."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from traitlets.config import Config

from devdock_spawner import DevDockSpawner
from devdock_spawner.hubconfig import ConfigError, user_origins

ORIGINS = [
    # (case, public URL, DEVDOCK_SUBDOMAIN_HOST, (subdomain_host, public_url))
    ("loopback-as-localhost", "http://127.0.0.1:8000", "", ("http://localhost:8000", "http://localhost:8000")),
    ("ipv6-loopback", "http://[::1]:8000", "", ("http://localhost:8000", "http://localhost:8000")),
    ("localhost-kept", "http://localhost:9000/", "", ("http://localhost:9000", "http://localhost:9000/")),
    ("site-host-name", "https://hub.example.org", "", ("https://hub.example.org", "https://hub.example.org")),
    (
        "site-wildcard",
        "https://hub.example.org",
        "https://u.example.org",
        ("https://u.example.org", "https://hub.example.org"),
    ),
]


@pytest.mark.parametrize(("public", "wildcard", "expected"), [o[1:] for o in ORIGINS], ids=[o[0] for o in ORIGINS])
def test_origin_per_user_derived_from_the_url_users_open(public, wildcard, expected):
    assert user_origins(public, wildcard) == expected


@pytest.mark.parametrize("public", ["http://192.0.2.10:8000", "http://0.0.0.0:8000", "ftp://hub", "http://hub/x"])
def test_origin_per_user_refuses_what_has_no_subdomains_with_a_sentence(public):
    with pytest.raises(ConfigError) as refused:
        user_origins(public)
    assert "DEVDOCK_" in str(refused.value)


def test_single_origin_only_through_its_opt_out():
    assert user_origins("http://192.0.2.10:8000", single_origin=True) == ("", "http://192.0.2.10:8000")


def _spawner(settings: dict, allow: bool) -> DevDockSpawner:
    user = SimpleNamespace(name="alice", url="/user/alice/", id=1, escaped_name="alice", settings=settings)
    orm_spawner = SimpleNamespace(name="", state=None, server=None, user=None, id=1)
    config = Config()
    config.DevDockSpawner.allow_single_origin = allow
    return DevDockSpawner(user=user, orm_spawner=orm_spawner, config=config)


def test_spawner_refuses_a_single_origin_hub_unless_the_site_opted_out():
    problem = _spawner({}, allow=False).single_origin_problem
    assert "subdomain_host" in problem and "allow_single_origin" in problem
    assert _spawner({}, allow=True).single_origin_problem == ""
    assert _spawner({"subdomain_host": "http://localhost:8000"}, allow=False).single_origin_problem == ""

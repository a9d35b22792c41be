"""jupyterhub_config.py's OAuth settings, from the variables .env sets (no engine needed: the config is loaded
in a subprocess the way JupyterHub loads it, and what it configured is read back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.harness import ROOT

PROBE = """
import json, sys
from traitlets.config.loader import PyFileConfigLoader
cfg = PyFileConfigLoader("jupyterhub_config.py", path=sys.argv[1]).load_config()
o = cfg.GenericOAuthenticator
claim = o.username_claim if "username_claim" in o else None
print(json.dumps({
    "class": cfg.JupyterHub.authenticator_class,
    "allow_all": o.allow_all if "allow_all" in o else None,
    "manage_groups": o.manage_groups if "manage_groups" in o else None,
    "allowed_groups": sorted(o.allowed_groups) if "allowed_groups" in o else None,
    "admin_groups": sorted(o.admin_groups) if "admin_groups" in o else None,
    "allowed_users": sorted(cfg.Authenticator.allowed_users) if "allowed_users" in cfg.Authenticator else None,
    "admin_users": sorted(cfg.Authenticator.admin_users),
    "public_url": cfg.JupyterHub.public_url if "public_url" in cfg.JupyterHub else None,
    "subdomain_host": cfg.JupyterHub.subdomain_host if "subdomain_host" in cfg.JupyterHub else None,
    "allow_single_origin": cfg.DevDockSpawner.allow_single_origin,
    "cookie_options": cfg.JupyterHub.tornado_settings.get("cookie_options") if "tornado_settings" in cfg.JupyterHub
                      else None,
    "groups_key": o.auth_state_groups_key if "auth_state_groups_key" in o else None,
    "callback": o.oauth_callback_url if "oauth_callback_url" in o else None,
    "from_id_token": o.userdata_from_id_token if "userdata_from_id_token" in o else None,
    "claim": claim if claim is None or isinstance(claim, str) else [
        claim({"email": "ada@example.org", "email_verified": True}),
        claim({"email": "eve@example.org", "email_verified": False}),
        claim({"email": "mallory@example.org"}),
    ],
}))
"""

PROVIDER = {
    "DEVDOCK_AUTHENTICATOR": "oauth",
    "DEVDOCK_HUB_IP": "127.0.0.1",  # no Docker look-up
    "OAUTH2_AUTHORIZE_URL": "https://idp.example.org/auth",
    "OAUTH2_TOKEN_URL": "https://idp.example.org/token",
    "OAUTH2_USERDATA_URL": "https://idp.example.org/userinfo",
    "OAUTH_CLIENT_ID": "devdock",
    "OAUTH_CLIENT_SECRET": "s3cret",
}


def load(tmp_path, **settings) -> tuple[int, dict | str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVDOCK_", "OAUTH"))}
    env.update(DEVDOCK_DATA_DIR=str(tmp_path), **PROVIDER)
    env.update(settings)
    for key in [k for k, v in env.items() if v is None]:
        del env[key]
    result = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return result.returncode, result.stderr
    return 0, json.loads(result.stdout)


def test_groups_from_the_idp_decide_who_signs_in_and_who_is_admin(tmp_path):
    status, cfg = load(
        tmp_path, DEVDOCK_OAUTH_ALLOWED_GROUPS="devdock-users", DEVDOCK_OAUTH_ADMIN_GROUPS="devdock-admins"
    )
    assert status == 0, cfg
    assert cfg["class"] == "generic-oauth"
    assert cfg["manage_groups"] is True
    assert cfg["groups_key"] == "oauth_user.groups"
    assert (cfg["allowed_groups"], cfg["admin_groups"]) == (["devdock-users"], ["devdock-admins"])
    # JupyterHub's "everyone" from the section above must not win over the groups.
    assert cfg["allow_all"] is False


def test_allowed_users_alone_restrict_sign_in(tmp_path):
    status, cfg = load(tmp_path, DEVDOCK_ALLOWED_USERS="octocat", DEVDOCK_ADMIN_USERS="hubot")
    assert status == 0, cfg
    assert cfg["allow_all"] is False
    assert cfg["allowed_users"] == ["hubot", "octocat"]
    assert cfg["manage_groups"] is None  # no groups claim asked for: JupyterHub's groups stay the admins'


def test_everyone_only_when_asked_for(tmp_path):
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1")
    assert status == 0, cfg
    assert cfg["allow_all"] is True


def test_refuses_to_start_without_saying_who_may_sign_in(tmp_path):
    status, err = load(tmp_path)
    assert status != 0
    assert "say who may log in" in err


@pytest.mark.parametrize("missing", ["OAUTH2_TOKEN_URL", "OAUTH_CLIENT_SECRET"])
def test_refuses_to_start_without_the_provider(tmp_path, missing):
    status, err = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", **{missing: None})
    assert status != 0
    assert missing in err and "docs/deployment.md" in err


def test_email_is_a_username_only_when_verified(tmp_path):
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_OAUTH_USERNAME_CLAIM="email")
    assert status == 0, cfg
    assert cfg["claim"] == ["ada@example.org", None, None]


def test_callback_url_follows_the_public_url(tmp_path):
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_PUBLIC_URL="https://devdock.example.org/")
    assert status == 0, cfg
    assert cfg["callback"] == "https://devdock.example.org/hub/oauth_callback"
    assert cfg["claim"] == "preferred_username"


def test_claims_from_the_id_token_need_no_userinfo_endpoint(tmp_path):
    status, cfg = load(
        tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_OAUTH_USERDATA_FROM_ID_TOKEN="1", OAUTH2_USERDATA_URL=None
    )
    assert status == 0, cfg
    assert cfg["from_id_token"] is True
    status, err = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", OAUTH2_USERDATA_URL=None)
    assert status != 0 and "OAUTH2_USERDATA_URL" in err


def test_no_admin_by_accident_an_idp_account_called_admin_is_not_one(tmp_path):
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1")
    assert status == 0, cfg
    assert cfg["admin_users"] == []
    # Positive control: admins the site names are admins.
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_ADMIN_USERS="ada")
    assert status == 0 and cfg["admin_users"] == ["ada"], cfg


def test_the_dummy_trial_setup_keeps_its_admin(tmp_path):
    status, cfg = load(tmp_path, DEVDOCK_AUTHENTICATOR="dummy", DEVDOCK_DUMMY_PASSWORD="x")
    assert status == 0, cfg
    assert cfg["admin_users"] == ["admin"]


def test_https_public_url_makes_every_cookie_secure(tmp_path):
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_PUBLIC_URL="https://devdock.example.org/")
    assert status == 0, cfg
    assert cfg["public_url"] == "https://devdock.example.org/"
    assert cfg["cookie_options"] == {"secure": True}
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_PUBLIC_URL="http://127.0.0.1:8000")
    assert status == 0 and cfg["cookie_options"] is None, cfg


def test_origin_per_user_by_default_with_the_callback_on_the_same_origin(tmp_path):
    """The shipped default: the hub on localhost, users' servers on its subdomains, OAuth's callback where the
    login's state cookie was set; the single origin only through its opt-out."""
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1")
    assert status == 0, cfg
    assert (cfg["subdomain_host"], cfg["public_url"]) == ("http://localhost:8000", "http://localhost:8000")
    assert cfg["callback"] == "http://localhost:8000/hub/oauth_callback"
    assert cfg["allow_single_origin"] is False
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_PUBLIC_URL="https://hub.example.org")
    assert status == 0, cfg
    assert cfg["subdomain_host"] == "https://hub.example.org"
    assert cfg["callback"] == "https://hub.example.org/hub/oauth_callback"
    status, cfg = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_SINGLE_ORIGIN="1")
    assert status == 0, cfg
    assert cfg["subdomain_host"] is None and cfg["allow_single_origin"] is True


def test_a_public_address_without_a_wildcard_host_stops_the_hub_with_a_sentence(tmp_path):
    status, out = load(tmp_path, DEVDOCK_OAUTH_ALLOW_ALL="1", DEVDOCK_PUBLIC_URL="http://192.0.2.10:8000")
    assert status != 0
    assert "DEVDOCK_SUBDOMAIN_HOST" in out and "DEVDOCK_SINGLE_ORIGIN=1" in out, out

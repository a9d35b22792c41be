"""Single sign-on through the stack's real OpenID Connect provider, in Debian's Chromium."""

from __future__ import annotations

from urllib.parse import quote, urlparse

import pytest


def test_login_success_lands_on_the_spawn_form_with_groups_from_the_idp(stack, person):
    if stack.api("GET", "/users/bob").status_code == 200:
        stack.stop("bob")  # with a running server, signing in would go straight to it
    bob = person()
    bob.page.goto(stack.url + "/")
    # The hub sends the browser straight to the identity provider (auto_login).
    bob.page.wait_for_url(f"{stack.issuer}/interaction/**")
    assert bob.page.locator("#sign-in").is_visible()
    bob.shot("journey-idp-login")
    bob.sign_in_at_idp("bob")
    bob.page.wait_for_url(f"{stack.url}/hub/spawn**")

    me = bob.page.request.get(f"{stack.url}/hub/api/user").json()
    assert me["name"] == "bob"
    assert me["admin"] is False
    # The IdP's groups claim became JupyterHub groups...
    assert "devdock-users" in me["groups"]
    # ...and they decide which profiles the spawn form offers: the GPU profile is for the "gpu" group only.
    assert bob.page.locator("#profile-desktop").is_visible()
    assert bob.page.locator("#profile-gpu").count() == 0
    # ...and to GPU quotas: the site's rule for the IdP's group applies to bob (tests/compose/stack.py, site_config).
    quota = bob.page.locator(".devdock-quota").inner_text()
    assert quota == "GPU-hours left this week: 500 of 500 (the devdock-users group's quota).", quota
    assert not bob.off_site


@pytest.mark.parametrize(
    ("user", "password"),
    [("alice", "not-alices-password"), ("nobody", "whatever")],
    ids=["wrong-password", "unknown-user"],
)
def test_wrong_credentials_are_refused_at_the_idp(stack, person, user, password):
    p = person()
    p.page.goto(stack.url + "/hub/")
    p.sign_in_at_idp(user, password)
    p.page.wait_for_selector("#login-error")
    # The same words for both, so the form does not tell which usernames exist.
    assert p.page.inner_text("#login-error") == "Wrong username or password."
    assert p.page.url.startswith(f"{stack.issuer}/interaction/")
    # Nothing reached the hub: this browser is still anonymous there.
    assert p.page.request.get(f"{stack.url}/hub/api/user").status == 403
    assert p.context.cookies(stack.url) == [] or all(
        c["name"].startswith("oauthenticator") for c in p.context.cookies(stack.url)
    )


def test_user_outside_the_allowed_groups_gets_a_clear_refusal(stack, person):
    visitor = person()
    visitor.sign_in("visitor")
    visitor.page.wait_for_load_state()
    text = visitor.page.inner_text("body")
    assert "403" in text
    assert "not allowed on this devdock server" in text
    assert "Ask its administrators for access" in text
    visitor.shot("journey-refused")
    # Refused before the hub made a user of them.
    assert stack.api("GET", "/users/visitor").status_code == 404
    assert visitor.page.request.get(f"{stack.url}/hub/api/user").status == 403


OFF_SITE_TARGETS = [
    ("absolute", "https://evil.example.com/steal"),
    ("scheme-relative", "//evil.example.com/steal"),
    ("backslash", "/\\evil.example.com/steal"),
]


@pytest.mark.parametrize("target", [t[1] for t in OFF_SITE_TARGETS], ids=[t[0] for t in OFF_SITE_TARGETS])
def test_next_parameter_cannot_send_the_browser_off_site(stack, person, target):
    p = person()
    # Signing in through the IdP with next= in the login link...
    p.page.goto(f"{stack.url}/hub/login?next={quote(target, safe='')}")
    p.sign_in_at_idp("bob")
    p.page.wait_for_url(f"{stack.url}/**")
    p.page.wait_for_load_state()
    # ...and, once signed in, the same link again.
    p.page.goto(f"{stack.url}/hub/login?next={quote(target, safe='')}")
    p.page.wait_for_load_state()

    assert urlparse(p.page.url).netloc == f"localhost:{stack.http_port}", p.page.url
    hosts = {urlparse(url).hostname for url in p.visited if url.startswith("http")}
    assert hosts <= {"localhost", "127.0.0.1"}, p.visited  # the hub, and the demo identity provider
    assert not p.off_site, p.off_site

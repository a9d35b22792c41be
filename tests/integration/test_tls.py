"""The hub behind the TLS example's front end (Debian's Caddy, the example's own Caddyfile): every cookie Secure."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import requests

from tests.harness import ROOT, free_port, xsrf_from


@pytest.fixture(scope="module")
def tls_front(make_hub, tmp_path_factory):
    """Caddy with examples/compose-override/Caddyfile (its internal CA), in front of a hub that knows its URL."""
    caddy = shutil.which("caddy")
    assert caddy, "caddy is missing: scripts/test.sh installs Debian's package"
    data = tmp_path_factory.mktemp("tls")
    port = free_port()
    public = f"https://127.0.0.1:{port}"
    hub = make_hub(data_dir=data / "hub", DEVDOCK_PUBLIC_URL=public)
    # The example's Caddyfile, as a site uses it, with the test's global options in front (no admin API, no
    # port 80, its own CA kept in the test's folder and not installed into the system's trust store).
    (data / "Caddyfile").write_text(
        "{\n\tadmin off\n\tskip_install_trust\n\tauto_https disable_redirects\n"
        f"\thttp_port {free_port()}\n}}\n"
        f"import {ROOT / 'examples/compose-override/Caddyfile'}\n"
    )
    env = {
        **os.environ,
        "DEVDOCK_DOMAIN": public,
        "DEVDOCK_HTTP_PORT": str(hub.port),
        "XDG_DATA_HOME": str(data / "caddy-data"),
        "XDG_CONFIG_HOME": str(data / "caddy-config"),
    }
    log = open(data / "caddy.log", "wb")
    proc = subprocess.Popen(
        [caddy, "run", "--config", str(data / "Caddyfile"), "--adapter", "caddyfile"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    ca = data / "caddy-data/caddy/pki/authorities/local/root.crt"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if ca.exists() and requests.get(f"{public}/hub/api/", verify=str(ca), timeout=3).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None, (data / "caddy.log").read_text()
        time.sleep(0.3)
    else:
        raise AssertionError(f"Caddy did not answer: {(data / 'caddy.log').read_text()[-3000:]}")
    yield hub, public, str(ca)
    proc.terminate()
    proc.wait(10)


def _set_cookies(response: requests.Response) -> list[str]:
    """Every Set-Cookie line of a response and of the redirects before it."""
    lines = []
    for r in [*response.history, response]:
        lines.extend(r.raw.headers.getlist("Set-Cookie"))
    return lines


def test_every_cookie_is_secure_behind_the_tls_front_end(tls_front):
    hub, public, ca = tls_front
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would win over the front end's own CA
    session.verify = ca  # the front end's certificate, verified for real
    cookies = []
    login_page = session.get(f"{public}/hub/login", timeout=30)
    cookies += _set_cookies(login_page)
    r = session.post(
        f"{public}/hub/login",
        data={"username": "tls", "password": hub.password, "_xsrf": xsrf_from(login_page.text)},
        timeout=30,
    )
    assert r.status_code == 200, r.status_code
    cookies += _set_cookies(r)
    hub.spawn("tls")
    lab = session.get(f"{public}/user/tls/lab", timeout=60)  # the OAuth dance with the user's own server
    assert lab.status_code == 200 and lab.url.startswith(f"{public}/user/tls/"), lab.url
    cookies += _set_cookies(lab)
    names = {line.split("=", 1)[0] for line in cookies}
    # Positive control: the hub's login, session and XSRF cookies and the server's own cookie were all set here.
    assert {"jupyterhub-hub-login", "jupyterhub-session-id", "_xsrf", "jupyterhub-user-tls"} <= names, names
    # A deletion (empty value, expiry in the past: what HubOAuth sends to drop its state cookie) carries nothing
    # to steal; every cookie that carries a value must be Secure.
    deletions = [line for line in cookies if line.split(";")[0].endswith('=""') and "expires=" in line.lower()]
    assert len(deletions) < len(cookies)
    insecure = [
        line for line in cookies
        if line not in deletions and "secure" not in [p.strip().lower() for p in line.split(";")]
    ]  # fmt: skip
    assert not insecure, insecure
    hub.stop_server("tls")

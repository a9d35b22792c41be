"""Per-user subdomains (``subdomain_host``): each user's server on its own origin, still behind the Hub's auth."""

from __future__ import annotations

import pytest
import requests
import websocket


@pytest.fixture(scope="module")
def shub(make_hub):
    hub = make_hub("subdomains", subdomains=True)
    hub.spawn("sue")
    return hub


def _host(hub, user: str) -> str:
    return f"{user}.devdock.localhost:{hub.port}"


def _get(hub, host: str, path: str, token: str | None = None) -> requests.Response:
    headers = {"Host": host, **({"Authorization": f"token {token}"} if token else {})}
    return requests.get(f"{hub.url}{path}", headers=headers, allow_redirects=False, timeout=30)


def test_each_users_server_lives_on_its_own_origin(shub):
    token = shub.token("sue")
    assert _get(shub, _host(shub, "sue"), "/user/sue/api/status", token).status_code == 200
    # The hub's own origin does not serve sue's server: it sends the browser to her subdomain.
    hub_host = f"devdock.localhost:{shub.port}"
    r = _get(shub, hub_host, "/user/sue/lab", token)
    assert r.status_code == 302
    r = _get(shub, hub_host, r.headers["Location"].split(hub_host, 1)[-1], token)  # /hub/user/sue/lab
    assert r.status_code == 302 and r.headers["Location"].startswith(f"http://sue.devdock.localhost:{shub.port}/")


def test_subdomain_server_still_refuses_anonymous_and_other_users(shub):
    other = shub.token("sam-sub")
    host = _host(shub, "sue")
    assert _get(shub, host, "/user/sue/api/contents").status_code in (302, 403)
    assert _get(shub, host, "/user/sue/api/contents", other).status_code == 403
    # The desktop websocket too, on the subdomain.
    url = f"ws://127.0.0.1:{shub.port}/user/sue/desktop-websockify/"
    for headers in ([], [f"Authorization: token {other}"]):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, host=host, header=headers, timeout=30)
        assert refused.value.status_code in (302, 403)
    ws = websocket.create_connection(url, host=host, header=[f"Authorization: token {shub.token('sue')}"], timeout=60)
    try:
        assert ws.recv().startswith(b"RFB 003.")
    finally:
        ws.close()

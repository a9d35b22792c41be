"""What devdock-gateway-keys and devdock-gateway-connect share: the hub's settings and one GET to its API.

Both run once per SSH connection, so they stay small and quick to start: ``python3 -I -S``, and a plain HTTP/1.1
request on a socket for an ``http://`` hub API (the usual case: the hub on this host's loopback); ``urllib``
(with TLS) only for an ``https://`` one.
"""

import json
import socket
import urllib.parse

SETTINGS = "/run/devdock-gateway/settings.json"


class HubError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def settings():
    with open(SETTINGS) as f:
        return json.load(f)


def get(config, path, query, timeout=60):
    """``GET <hub_api><path>?<query>`` with the gateway's token: the JSON answer and its status (2xx), or
    HubError(status, the hub's message)."""
    url = urllib.parse.urlsplit(f"{config['hub_api']}{path}?{urllib.parse.urlencode(query)}")
    if url.scheme != "http":
        return _get_tls(config, url.geturl(), timeout)
    request = (
        f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: token {config['token']}\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port or 80), timeout=timeout) as s:
        s.sendall(request.encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return _answer(status, body)


def _unchunk(body):
    out = []
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out.append(rest[:n])
        body = rest[n + 2 :]
    return b"".join(out)


def _answer(status, body):
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {}
    if not 200 <= status < 300:
        raise HubError(status, data.get("message") or f"the hub answered {status}")
    return data, status


def _get_tls(config, url, timeout):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"token {config['token']}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _answer(response.status, response.read())
    except urllib.error.HTTPError as e:
        return _answer(e.code, e.read())

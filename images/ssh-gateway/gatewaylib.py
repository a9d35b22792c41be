"""What devdock-gateway-keys and devdock-gateway-connect share: the hub's settings, one GET to its API, a TCP
connection, and the percent-encoding of targets.

sshd starts these programs three times for every login (the keys command for the key's offer and again for its
signature, then the forced command), so each costs a whole Python start, and what they import is most of it:
``json`` (with ``re``), ``socket`` (with ``enum``), ``urllib.parse`` (with ``re`` and ``collections``) cost two to
three times the bare interpreter. So: ``python3 -I -S``, and those modules are imported only on the paths that need
them (a lookup at the hub, a name that needs percent-encoding); the common paths use ``_socket`` and ``select``
(CPython's built-in modules under ``socket`` and ``selectors``) and json's own C scanner. A plain HTTP/1.1 request
on a socket for an ``http://`` hub API (the usual case: the hub on this host's loopback); ``urllib`` (with TLS) only
for ``https://``.
"""

import _socket

SETTINGS = "/run/devdock-gateway/settings.json"
#: What ``urllib.parse.quote`` never encodes: a name made only of these is its own percent-encoding.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


class HubError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def settings():
    with open(SETTINGS, "rb") as f:
        return _loads(f.read())


def quote(text, safe=""):
    """``urllib.parse.quote(text, safe=safe)``, without importing it for a name that needs no encoding."""
    if all(c in _UNRESERVED or c in safe for c in text):
        return text
    import urllib.parse

    return urllib.parse.quote(text, safe=safe)


def unquote(text):
    """``urllib.parse.unquote(text)``, without importing it for a word without ``%``."""
    if "%" not in text:
        return text
    import urllib.parse

    return urllib.parse.unquote(text)


def tcp(host, port, timeout):
    """A connected TCP socket with TCP_NODELAY, blocking after ``timeout`` seconds to connect. An IP address (what
    the hub answers) is connected with ``_socket`` alone; a name goes through ``socket.create_connection``."""
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
        except OSError:
            continue
        sock = _socket.socket(family, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, int(port)))
        except BaseException:
            sock.close()
            raise
        break
    else:
        import socket

        sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return sock


def get(config, path, query, timeout=60):
    """``GET <hub_api><path>?<query>`` with the gateway's token: the JSON answer and its status (2xx), or
    HubError(status, the hub's message)."""
    where = _plain_http(config["hub_api"])
    if where is None:
        import urllib.parse

        return _get_tls(config, f"{config['hub_api']}{path}?{urllib.parse.urlencode(query)}", timeout)
    netloc, host, port, prefix = where
    request = (
        f"GET {prefix}{path}?{_form(query)} HTTP/1.1\r\nHost: {netloc}\r\nAuthorization: token {config['token']}\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n"
    )
    s = tcp(host, port, timeout)
    try:
        s.settimeout(timeout)
        s.sendall(request.encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        s.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return _answer(status, body)


def _plain_http(api):
    """``(netloc, host, port, path)`` of an ``http://HOST[:PORT][/PATH]`` URL (HOST a name, an IPv4 address or an
    [IPv6] one), without urllib; None for anything else (``https://``: urllib's)."""
    if not api.startswith("http://"):
        return None
    netloc, slash, rest = api[7:].partition("/")
    if not netloc or any(c in netloc for c in "@?#%") or any(c in rest for c in "?#"):
        return None
    host, port = netloc, "80"
    if netloc.startswith("["):
        host, _, after = netloc[1:].partition("]")
        if after:
            port = after[1:] if after.startswith(":") else ""
    elif ":" in netloc:
        host, _, port = netloc.partition(":")
    if not host or not port.isdigit():
        return None
    return netloc, host, int(port), slash + rest


def _form(query):
    """``urllib.parse.urlencode(query)``; without urllib for values such as a public key (letters, digits, ``+/=``
    and a space)."""
    plain = _UNRESERVED | frozenset(" +/=")
    if not all(c in plain for item in query.items() for c in "".join(item)):
        import urllib.parse

        return urllib.parse.urlencode(query)
    escape = {ord(" "): "+", ord("+"): "%2B", ord("/"): "%2F", ord("="): "%3D"}
    return "&".join(f"{k.translate(escape)}={v.translate(escape)}" for k, v in query.items())


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
        data = _loads(body or b"{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if not 200 <= status < 300:
        raise HubError(status, data.get("message") or f"the hub answered {status}")
    return data, status


class _Decoding:
    """What json's C scanner reads from a ``json.JSONDecoder``: the defaults of ``json.loads``."""

    strict, object_hook, object_pairs_hook, parse_float, parse_int = True, None, None, float, int

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not JSON")


def _loads(body):
    """``json.loads(body)`` through the scanner in C that ``json`` itself uses (``_json``): importing ``json``
    imports ``re``, and the two cost more than the rest of a key lookup."""
    try:
        import _json
    except ImportError:  # pragma: no cover - a Python without it
        import json

        return json.loads(body)
    text = body.decode("utf-8").strip(" \t\r\n")
    try:
        value, end = _json.make_scanner(_Decoding)(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("more than one JSON value")
    return value


def _get_tls(config, url, timeout):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"token {config['token']}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _answer(response.status, response.read())
    except urllib.error.HTTPError as e:
        return _answer(e.code, e.read())

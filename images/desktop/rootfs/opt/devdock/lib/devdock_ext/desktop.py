"""devdock's desktop page (``/desktop/``): noVNC into the same TigerVNC session jupyter-remote-desktop-proxy
starts and proxies (its websocket ``/desktop-websockify/``, behind the hub's auth, is used unchanged).

It replaces jupyter-remote-desktop-proxy's page, whose viewer gives up after five tries in fifteen seconds and
has only the clipboard popover, with one that:

- copies and pastes through the browser's Clipboard API where the browser allows it (permission asked once),
  keeping the popover as the fallback; only for the server's owner: an admin who opens a user's desktop shares
  no clipboard with that user (nothing copied on the desktop lands in the admin's clipboard, nothing the admin
  copied reaches the desktop), and gets the popover when they ask for it;
- reconnects by itself, for as long as the server exists, with a visible "Reconnecting" state (a proxy restart,
  a network blip, a laptop waking up), and says so with a link to the hub once the server is gone;
- asks the session to follow the window's size (``resizeSession``);
- says that sound needs the Selkies view (noVNC carries no audio), with a link to it where the server offers it.

noVNC comes from Debian's ``novnc`` package: its ES modules and ``viewer/viewer.js`` are bundled into one classic
script when the image is built (``viewer.bundle.js``, by Debian's esbuild). The page and its files are served only
to the server's owner, as every other route of the server.
"""

from __future__ import annotations

import json
import os

from jupyter_server.base.handlers import AuthenticatedFileHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import escape, web

HERE = os.path.dirname(os.path.abspath(__file__))
VIEWER = os.path.join(HERE, "viewer")

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Desktop</title>
  <link rel="stylesheet" href="{static}viewer.css">
</head>
<body data-state="connecting">
  <div id="top-bar">
    <span id="logo">devdock</span>
    <span id="status-container"><span id="status-label">Status:</span> <span id="status">Connecting...</span></span>
    <a id="clipboard-button" href="#"
       title="The desktop's clipboard, for browsers without clipboard access">Remote Clipboard</a>
    <span id="clipboard-mode"></span>
    {audio_note}
    {hub_link}
  </div>
  <div id="devdock-banner" hidden></div>
  <div id="clipboard-container" hidden>
    <p>Text here is the desktop's clipboard: what you copy there appears here, and what you type or paste here can be
       pasted there.</p>
    <textarea id="clipboard-text" rows="5"></textarea>
  </div>
  <div id="screen"></div>
  <script id="devdock-desktop-config" type="application/json">{config}</script>
  <script src="{static}viewer.bundle.js"></script>
</body>
</html>
"""


def owns(handler, owner: str) -> bool:
    """Whether the person looking is the server's owner (JupyterHub names the owner in ``JUPYTERHUB_USER`` and the
    requesting user in the identity it hands the server). Without a hub there is nobody else."""
    if not owner:
        return True
    return getattr(handler.current_user, "username", None) == owner


class DesktopPageHandler(JupyterHandler):
    @web.authenticated
    def get(self):
        base = self.base_url
        hub = self.serverapp.jinja_template_vars.get("hub_control_panel_url", "")
        hub_link = f'<a id="hub-link" href="{escape.xhtml_escape(hub)}">Hub</a>' if hub else ""
        owner = os.environ.get("JUPYTERHUB_USER", "")
        config = {"hub": hub, "xsrf": self.xsrf_token.decode(), "owner": owner, "ownView": owns(self, owner)}
        config = json.dumps(config).replace("</", "<\\/")
        static = url_path_join(base, "devdock/desktop-static/")
        if os.environ.get("DEVDOCK_SELKIES", "1") == "1":
            selkies = escape.xhtml_escape(url_path_join(base, "selkies/"))
            audio_note = (
                f'<a id="audio-note" href="{selkies}" target="_blank" rel="noopener" title="noVNC carries no sound; '
                'Selkies shows this same desktop, with its sound">Sound: open in Selkies</a>'
            )
        else:
            audio_note = '<span id="audio-note" title="noVNC carries no sound">No sound in this view</span>'

        self.set_header("Cache-Control", "no-store")
        self.finish(
            PAGE.format(static=escape.xhtml_escape(static), hub_link=hub_link, audio_note=audio_note, config=config)
        )


def handlers(base_url: str) -> list:
    """Added before jupyter-remote-desktop-proxy's own (devdock_ext loads first), so ``/desktop/`` is this page."""
    return [
        (url_path_join(base_url, "/desktop/"), DesktopPageHandler),
        (url_path_join(base_url, "/devdock/desktop-static/(.*)"), AuthenticatedFileHandler, {"path": VIEWER}),
    ]

"""devdock's single-user server configuration (installed as the venv's etc/jupyter/jupyter_server_config.py).

The desktop's websocket does not count as activity: noVNC asks for framebuffer updates all the time, so an open
desktop tab that nobody touches would keep its server, and its GPUs, for ever. The same server as
jupyter-remote-desktop-proxy's entry point, with ``update_last_activity`` off: jupyter-server-proxy registers
configured servers before entry points, and tornado serves a path with the first handler that matches. Real
input on the desktop counts instead: devdock's server extension reads the X server's own idle time.

Selkies (``/selkies/``) is the second way into the same desktop session: devdock-selkies streams the session noVNC
shows, on a unix socket, with activity off for the same reason (its video websocket never rests). It lives in a venv
of its own, so its own entry point (which would start a second, empty desktop) is not in this server's; the spawner
switches it off per profile (``DEVDOCK_SELKIES=0``), and then ``/selkies/`` is not served at all.
"""

import glob
import os

from jupyter_remote_desktop_proxy.setup_websockify import setup_websockify

c = get_config()  # noqa: F821

desktop = setup_websockify()
desktop["update_last_activity"] = False
desktop["launcher_entry"] = {**desktop.get("launcher_entry", {}), "enabled": False}  # the entry point's stays
servers = {"desktop-websockify": desktop}

if os.environ.get("DEVDOCK_SELKIES", "1") == "1" and os.path.exists("/opt/devdock/bin/devdock-selkies"):
    icons = glob.glob("/opt/devdock/selkies/lib/python3*/site-packages/selkies/selkies_web/selkies.svg")
    servers["selkies"] = {
        "command": ["/opt/devdock/bin/devdock-selkies", "{unix_socket}"],
        "unix_socket": True,
        "timeout": 60,
        "new_browser_tab": True,
        "update_last_activity": False,
        "launcher_entry": {"title": "Desktop (Selkies)", **({"icon_path": icons[0]} if icons else {})},
    }

c.ServerProxy.servers = servers

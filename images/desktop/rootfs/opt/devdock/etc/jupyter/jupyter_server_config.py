"""devdock's single-user server configuration (installed as the venv's etc/jupyter/jupyter_server_config.py).

The desktop's websocket does not count as activity: noVNC asks for framebuffer updates all the time, so an open
desktop tab that nobody touches would keep its server, and its GPUs, for ever. The same server as
jupyter-remote-desktop-proxy's entry point, with ``update_last_activity`` off: jupyter-server-proxy registers
configured servers before entry points, and tornado serves a path with the first handler that matches. Real
input on the desktop counts instead: devdock's server extension reads the X server's own idle time.
"""

from jupyter_remote_desktop_proxy.setup_websockify import setup_websockify

c = get_config()  # noqa: F821

desktop = setup_websockify()
desktop["update_last_activity"] = False
desktop["launcher_entry"] = {**desktop.get("launcher_entry", {}), "enabled": False}  # the entry point's stays
c.ServerProxy.servers = {"desktop-websockify": desktop}

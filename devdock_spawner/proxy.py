"""configurable-http-proxy, minus its per-route activity: servers say themselves when they are in use.

JupyterHub reads every route's ``last_activity`` from configurable-http-proxy every ``last_activity_interval``
and moves the server's activity forward with it (``JupyterHub.update_last_activity``). The proxy counts every
proxied message, and noVNC asks for framebuffer updates all the time: an open desktop tab that nobody has
touched for days would look active, and its GPUs would never be given back. With this proxy class the hub's
view of a server's activity comes only from the server's own reports, which count real use: JupyterLab,
terminals and kernels as JupyterHub always has, SSH sessions, and keyboard or pointer input on the desktop
(devdock's server extension in the image). Everything else JupyterHub does with the proxy is unchanged.

It also gives the starts that waited in line for GPUs their place back when a hub starts again
(queue_restore.py): JupyterHub checks the proxy's routes at every start, before anything else is served.

``c.JupyterHub.proxy_class = "devdock"`` (devdock's jupyterhub_config.py sets it).
"""

from __future__ import annotations

from jupyterhub.proxy import ConfigurableHTTPProxy

from . import queue_restore


class DevDockProxy(ConfigurableHTTPProxy):
    """``ConfigurableHTTPProxy`` whose routes carry no ``last_activity`` (all its settings still apply)."""

    async def get_all_routes(self):
        routes = await super().get_all_routes()
        for route in routes.values():
            route.get("data", {}).pop("last_activity", None)
        return routes

    async def check_routes(self, user_dict, service_dict, routes=None):
        await super().check_routes(user_dict, service_dict, routes)
        if self.app is not None:
            queue_restore.restore_soon(self.app)

"""Idle culling, the server's side: its limits, what it says about its activity, and why it last stopped (a mixin).

The culler itself is a hub-managed service (:mod:`devdock_spawner.culler`); this part hands each server the limits
of its profile (so that the server can warn its user), asks a running server about its activity (the admin page),
and keeps the culler's reason for the home page.
"""

from __future__ import annotations

import json

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Dict, Int
from traitlets.config import LoggingConfigurable

from . import culler


class CullingMixin(LoggingConfigurable):
    """Idle-culling settings and what a server reports about its activity."""

    # --- idle culling ------------------------------------------------------------------------

    cull_idle_timeout = Int(
        culler.IDLE_TIMEOUT,
        config=True,
        help="""
        Seconds without activity after which the idle culler (the ``devdock-culler`` service) stops a server that
        holds no GPU. A profile's ``idle_timeout`` wins. What counts as activity: JupyterLab, terminals and
        kernels, SSH sessions, and keyboard or pointer input on the desktop (an open desktop tab alone does not).
        0: never. Default: 28800 (8 hours).
        """,
    )

    cull_gpu_idle_timeout = Int(
        culler.GPU_IDLE_TIMEOUT,
        config=True,
        help="""
        The same for servers whose profile holds GPUs, so that scarce GPUs are given back first. A profile's
        ``idle_timeout`` wins. Default: 7200 (2 hours).
        """,
    )

    cull_max_age = Int(
        0,
        config=True,
        help="""
        Seconds a server without GPUs may run at most, however busy. A profile's ``max_age`` wins. 0 (default):
        no limit.
        """,
    )

    cull_gpu_max_age = Int(
        culler.GPU_MAX_AGE,
        config=True,
        help="""
        Seconds a server holding GPUs may run at most, however busy (a fair share, not a lease for ever). A
        profile's ``max_age`` wins. 0: no limit. Default: 259200 (3 days).
        """,
    )

    cull_warning = Int(
        600,
        config=True,
        help="""
        Seconds before an idle stop (or the maximum age) that the user is warned, on the desktop and in
        JupyterLab; any use cancels an idle stop. Default: 600 (10 minutes).
        """,
    )

    def cull_policy(self) -> culler.Policy:
        """The culling policy of this hub's profiles (the culler service gets the same, see jupyterhub_config.py)."""
        return culler.policy_for(
            self._profiles(),
            self.cull_idle_timeout,
            self.cull_gpu_idle_timeout,
            self.cull_gpu_max_age,
            self.cull_max_age,
        )

    #: The profile of the current (or last) start.
    _profile_slug = ""

    def cull_environment(self) -> dict:
        """The limits of this server's profile, so that the server can warn its user before the stop."""
        rule = culler.rule_for(self.cull_policy(), self._profile_slug)
        return {
            "DEVDOCK_CULL_IDLE_TIMEOUT": str(rule.idle_timeout),
            "DEVDOCK_CULL_MAX_AGE": str(rule.max_age),
            "DEVDOCK_CULL_WARNING": str(self.cull_warning),
        }

    async def activity_status(self) -> dict:
        """What the running server says about its activity (``api/devdock/status`` of devdock's server extension):
        the last activity, of which kind, and when the culler will stop it. Empty when it cannot say."""
        server = self.server
        if not (self.active and self.ready and server is not None and self.api_token):
            return {}

        url = f"http://{server.ip}:{server.port}{server.base_url}api/devdock/status"
        try:
            response = await AsyncHTTPClient().fetch(
                HTTPRequest(url, headers={"Authorization": f"token {self.api_token}"}, request_timeout=3)
            )
            return json.loads(response.body)
        except Exception as e:  # noqa: BLE001 - an image without devdock's extension, a server starting up
            self.log.debug("No activity status from %s: %s", self._log_name, e)
            return {}

    #: Why the server last stopped when it was not its user's doing (the culler's reason), with the time: the
    #: home page tells the user. Kept in the state while stopped; cleared by the next start.
    stop_reason = Dict()

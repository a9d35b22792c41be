"""Where servers live on the network, and who can reach them (a mixin of DevDockSpawner).

Servers share a bridge network of their own with no traffic between containers, each user's server is served on an
origin of its own, and the cloud's metadata service is out of reach. The hub-wide work (making the network, adding
the firewall rule once) is :class:`~devdock_spawner.hubwide.DevDockHub`'s; these are the settings it reads.
"""

from __future__ import annotations

from traitlets import Bool, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import cloud_metadata


class NetworkMixin(LoggingConfigurable):
    """The users' network and each server's origin."""

    @default("network_name")
    def _default_network_name(self):
        """``devdock``: a bridge network of its own, created when missing (see ``create_network``)."""
        return "devdock"

    @default("use_internal_ip")
    def _default_use_internal_ip(self):
        """True: the proxy reaches containers on the network; no host port per server."""
        return True

    isolate_containers = Bool(
        True,
        config=True,
        help="""
        When devdock creates ``network_name``, turn off traffic between containers on it
        (``enable_icc=false``): one user's container cannot reach another's JupyterLab, desktop or
        sshd. The hub, on the host, still reaches every container, and containers reach the hub API.
        docker-compose.yml keeps it on too: its hub and proxy use the host's network. Set False only
        when the hub runs in a container attached to this network. Default: True.
        """,
    )

    allow_single_origin = Bool(
        False,
        config=True,
        help="""
        Serve users' servers on the hub's own origin (``JupyterHub.subdomain_host`` unset). **Unsafe on a hub
        with more than one user**: a user controls their own server completely, so a page it serves runs on
        the hub's origin, and whoever opens it (another user, an admin) lets it act for them: change their SSH
        keys on ``/hub/ssh``, read their pages. devdock refuses to start servers on such a hub unless this is
        True; the admin page then says so in red. ``jupyterhub_config.py`` sets it from ``DEVDOCK_SINGLE_ORIGIN``.
        Default: False (set ``c.JupyterHub.subdomain_host``: every server on its own origin).
        """,
    )

    @property
    def single_origin_problem(self) -> str:
        """Why this hub must not start servers ("" when every user's server has its own origin)."""
        settings = getattr(self.user, "settings", None) or {}
        if settings.get("subdomain_host") or self.allow_single_origin:
            return ""
        return (
            "devdock gives every user's server an origin of its own, and this hub's JupyterHub.subdomain_host is "
            "not set: a page served by one user's server could act for whoever opens it. Set "
            "c.JupyterHub.subdomain_host (DEVDOCK_SUBDOMAIN_HOST; local use: http://localhost:8000), or accept the "
            "risk with c.DevDockSpawner.allow_single_origin = True (DEVDOCK_SINGLE_ORIGIN=1); docs/security.md"
        )

    block_cloud_metadata = Bool(
        True,
        config=True,
        help="""
        Keep users' containers from the cloud's metadata service (``cloud_metadata_addresses``), which answers
        anyone on a cloud VM with the VM's identity and its role's credentials: at the hub's first spawn, devdock
        adds a rule per subnet of ``network_name`` to Docker's ``DOCKER-USER`` iptables chain (a one-shot helper
        container of ``firewall_helper_image`` on the host's network with ``NET_ADMIN``); the host itself is not
        affected. A start is refused with a sentence when the rule cannot be added. Single engine only (on a
        Swarm, add the rule on each node: docs/security.md). False: no rule (and none removed). Default: True.
        """,
    )

    cloud_metadata_addresses = List(
        Unicode(),
        list(cloud_metadata.DEFAULT_ADDRESSES),
        config=True,
        help="""
        IPv4 addresses or networks users' containers must not reach (``block_cloud_metadata``). Default:
        ``["169.254.169.254"]`` (AWS, Azure, GCP, OpenStack, Oracle and others); add e.g. ``"169.254.170.2"``
        (Amazon ECS task metadata) or ``"100.100.100.200"`` (Alibaba Cloud).
        """,
    )

    @validate("cloud_metadata_addresses")
    def _valid_metadata_addresses(self, proposal):
        try:
            cloud_metadata.ipv4_networks(proposal.value)
        except ValueError as e:
            raise TraitError(f"cloud_metadata_addresses: {e}") from e
        return proposal.value

    firewall_helper_image = Unicode(
        "devdock/hub:latest",
        config=True,
        help="""
        Image of the one-shot helper that adds the ``block_cloud_metadata`` rule: it runs ``sh`` and
        ``iptables-nft`` / ``iptables-legacy`` (devdock's hub image has them) on the host's network, with no
        capability but ``NET_ADMIN`` and ``NET_RAW``, a read-only root and no new privileges.
        """,
    )

    create_network = Bool(
        True,
        config=True,
        help="""
        Create ``network_name`` (a bridge network labelled ``io.devdock.managed``) when it does not
        exist. Set to False when the network is managed elsewhere (compose, Swarm). Default: True.
        """,
    )

    async def ensure_network(self):
        """The users' network exists (made once per hub), with cloud metadata out of reach."""
        await self.devdock_hub.ensure_network()

"""jupyterhub-idle-culler's configuration file (traitlets), as the hub-managed service devdock-culler loads it."""

from devdock_spawner.culler import arbiter

c = get_config()  # noqa: F821  (provided by traitlets when the culler loads this file)
c.IdleCuller.cull_arbiter_hook = arbiter

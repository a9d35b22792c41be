"""A site's hub configuration on top of devdock's compose stack (mounted by site-config.yml)."""

# Everything the stack configures: jupyterhub_config.py (DEVDOCK_* variables) and the spawn form's profiles.
load_subconfig("/srv/devdock/compose_config.py")  # noqa: F821  (provided by JupyterHub)
c = get_config()  # noqa: F821

# Then anything JupyterHub, DockerSpawner or DevDockSpawner can be told, for example:
c.DevDockSpawner.shm_size = "2g"
c.JupyterHub.template_vars = {"announcement": "Maintenance on Friday 18:00-19:00."}

"""A site's own hub configuration: /etc/devdock/site_config.py (or DEVDOCK_SITE_DIR/site_config.py).

devdock's jupyterhub_config.py loads it last, under scripts/up.sh and in the compose stack alike, so what it sets
wins. It lives outside the git checkout: `git pull` never conflicts with it.
"""

c = get_config()  # noqa: F821  (provided by JupyterHub)

# Anything JupyterHub, DockerSpawner or DevDockSpawner can be told, for example:
c.DevDockSpawner.shm_size = "2g"
c.JupyterHub.template_vars = {"announcement": "Maintenance on Friday 18:00-19:00."}

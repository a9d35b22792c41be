"""JupyterHub configuration of devdock's compose stack: the repository's jupyterhub_config.py, which reads the
site folder (/etc/devdock in the hub container, mounted from DEVDOCK_SITE_DIR on the host: profiles.json and
site_config.py), with the demo's profiles.json beside this file when the site has none of its own.

The hub image runs this file; a site never needs to edit it (docs/operations.md).
"""

import os

here = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("DEVDOCK_DEMO_PROFILES_FILE", os.path.join(here, "profiles.json"))
load_subconfig(os.path.join(here, "jupyterhub_config.py"))  # noqa: F821  (provided by JupyterHub)
c = get_config()  # noqa: F821

# Where the container's healthcheck finds the hub: the API address is only known once the config has run.
with open("/tmp/devdock-hub-health-url", "w") as f:
    f.write(f"http://{c.JupyterHub.hub_ip}:{c.JupyterHub.hub_port}/hub/health")

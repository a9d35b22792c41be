"""JupyterHub configuration of devdock's compose stack: the repository's jupyterhub_config.py, plus the spawn
form's profiles from a JSON file.

The hub image runs this file. ``DEVDOCK_PROFILES_FILE`` (default: the demo's ``profiles.json`` beside it) holds a
list in the format of ``c.DevDockSpawner.profile_list``; mount your own over it, or point the variable at another
file. A site with more to configure mounts its own config file and sets ``DEVDOCK_CONFIG`` to it; that file starts
with ``load_subconfig("/srv/devdock/compose_config.py")`` (see examples/compose-override/).
"""

import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
load_subconfig(os.path.join(here, "jupyterhub_config.py"))  # noqa: F821  (provided by JupyterHub)
c = get_config()  # noqa: F821

profiles_file = os.environ.get("DEVDOCK_PROFILES_FILE", "").strip() or os.path.join(here, "profiles.json")
if os.path.exists(profiles_file):
    try:
        with open(profiles_file) as f:
            c.DevDockSpawner.profile_list = json.load(f)["profiles"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"devdock: cannot read the profiles of {profiles_file}: {e!r}")
elif os.environ.get("DEVDOCK_PROFILES_FILE"):
    sys.exit(f"devdock: DEVDOCK_PROFILES_FILE={profiles_file} does not exist")

# Where the container's healthcheck finds the hub: the API address is only known once the config has run.
with open("/tmp/devdock-hub-health-url", "w") as f:
    f.write(f"http://{c.JupyterHub.hub_ip}:{c.JupyterHub.hub_port}/hub/health")

"""The baseline of benchmarks/cull.py: plain DockerSpawner with jupyterhub-idle-culler as its README configures it.

devdock's jupyterhub_config.py with the stock pieces put back: DockerSpawner, JupyterHub's own
ConfigurableHTTPProxy class (the proxy's per-route activity counts, read every 15 s here, 300 s by default), the
culler with its default arbiter, and jupyter-remote-desktop-proxy as it comes (devdock's server configuration,
which turns the desktop websocket's activity off, is hidden under an empty file). Same image, same timeout.
"""

import os
import sys

c = get_config()  # noqa: F821
load_subconfig(os.path.join(os.path.dirname(__file__), "plain_dockerspawner_config.py"))  # noqa: F821

c.JupyterHub.proxy_class = "configurable-http-proxy"
empty = os.environ["DEVDOCK_BENCH_EMPTY_FILE"]
c.DockerSpawner.volumes = {empty: {"bind": "/opt/devdock/venv/etc/jupyter/jupyter_server_config.py", "mode": "ro"}}
c.JupyterHub.last_activity_interval = 15
timeout = os.environ["DEVDOCK_CULL_TIMEOUT"]
c.JupyterHub.services = [s for s in c.JupyterHub.services if s["name"] != "devdock-culler"] + [
    {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={timeout}", "--cull-every=5"],
    }
]
c.JupyterHub.load_roles = [r for r in c.JupyterHub.load_roles if r["name"] != "devdock-culler"] + [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]

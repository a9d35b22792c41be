"""The baseline for benchmarks: devdock's jupyterhub_config.py, but with plain DockerSpawner.

Same image, same network, same hub, same proxy: only the spawner class differs.
"""

import os

c = get_config()  # noqa: F821
load_subconfig(os.path.join(os.path.dirname(__file__), "..", "jupyterhub_config.py"))  # noqa: F821

c.JupyterHub.spawner_class = "docker"
c.DockerSpawner.image = c.DevDockSpawner.image
c.DockerSpawner.network_name = c.DevDockSpawner.network_name
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True
c.DockerSpawner.prefix = c.DevDockSpawner.prefix + "-plain"
# Labels, so that the benchmark's cleanup finds these containers too.
c.DockerSpawner.extra_create_kwargs = {"labels": dict(c.DevDockSpawner.extra_labels)}

"""devdock on a host without the NVIDIA container toolkit: GPUs as device nodes."""

import os

c = get_config()  # noqa: F821
load_subconfig(os.path.join(os.path.dirname(__file__), "..", "..", "jupyterhub_config.py"))  # noqa: F821

c.DevDockSpawner.gpu_mode = "devices"
c.DevDockSpawner.gpu_driver_dir = "/usr/local/nvidia"  # bin/nvidia-smi, lib64/libnvidia-ml.so, ...
c.DevDockSpawner.gpu_inventory = [
    {"index": 0, "uuid": "GPU-00000000-0000-0000-0000-000000000000", "name": "NVIDIA H100", "device": "/dev/nvidia0"},
]
c.DevDockSpawner.profile_list = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "gpu", "display_name": "The GPU", "gpus": 1},
]

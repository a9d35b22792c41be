"""devdock on a host without the NVIDIA container toolkit: GPUs as device nodes."""

# A site configuration: put it in the site folder as site_config.py (/etc/devdock/site_config.py, or wherever
# DEVDOCK_SITE_DIR points). devdock's jupyterhub_config.py loads it last, so what is set here wins.
c = get_config()  # noqa: F821

c.DevDockSpawner.gpu_mode = "devices"
c.DevDockSpawner.gpu_driver_dir = "/usr/local/nvidia"  # bin/nvidia-smi, lib64/libnvidia-ml.so, ...
c.DevDockSpawner.gpu_inventory = [
    {"index": 0, "uuid": "GPU-00000000-0000-0000-0000-000000000000", "name": "NVIDIA H100", "device": "/dev/nvidia0"},
]
c.DevDockSpawner.profile_list = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "gpu", "display_name": "The GPU", "gpus": 1},
]

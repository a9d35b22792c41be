"""devdock on a GPU host: profiles with GPUs, exclusive allocation, SSH for everyone."""

# A site configuration: put it in the site folder as site_config.py (/etc/devdock/site_config.py, or wherever
# DEVDOCK_SITE_DIR points). devdock's jupyterhub_config.py loads it last, so what is set here wins.
c = get_config()  # noqa: F821

# The GPUs (nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv). Leave this out to let devdock
# find them with a one-shot nvidia-smi container.
c.DevDockSpawner.gpu_inventory = [
    {"index": i, "uuid": f"GPU-00000000-0000-0000-0000-00000000000{i}", "name": "NVIDIA A100", "memory_mib": 81920}
    for i in range(4)
]
c.DevDockSpawner.gpu_mode = "nvidia"  # the NVIDIA container toolkit's runtime
c.DevDockSpawner.gpu_max_users_per_gpu = 1  # exclusive

# Every profile runs devdock's desktop image (c.DevDockSpawner.image): the toolkit puts the driver in at run time,
# and frameworks bring their own CUDA libraries (pip install torch). A profile may name a site image with a
# framework preinstalled instead ("overrides": {"image": ...}, docs/howto/images.md).
c.DevDockSpawner.profile_list = [
    {"slug": "desktop", "display_name": "Desktop", "description": "No GPU", "default": True},
    {
        "slug": "gpu-1",
        "display_name": "1 GPU",
        "gpus": 1,
        "overrides": {"mem_limit": "64G", "cpu_limit": 16},
    },
    {
        "slug": "gpu-2",
        "display_name": "2 GPUs",
        "gpus": 2,
        "allowed_groups": ["deep-learning"],
        "overrides": {"mem_limit": "128G", "cpu_limit": 32},
    },
]

c.DevDockSpawner.ssh_port_range = (42000, 42099)
c.DevDockSpawner.ssh_host = "gpu01.example.org"

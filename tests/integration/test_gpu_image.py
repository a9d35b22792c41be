"""The GPU path of devdock's one desktop image, on the real engine, with stand-in GPUs given by a CDI spec.

This engine has no GPU. The CDI spec here is shaped like the one ``nvidia-ctk cdi generate`` writes: per GPU its device
node at ``/dev/nvidia0``, and for one of them the driver's files mounted where the toolkit puts them (a stand-in
``libcuda.so.1`` built here from C, answering as one GPU would, in ``/usr/lib/x86_64-linux-gnu``, and a stand-in
``nvidia-smi``); for all, ``NVIDIA_VISIBLE_DEVICES=void`` and the control nodes, as NVIDIA's spec has them.
What runs in the servers is the real image, the real spawner and the user's own kernel: what a CUDA program sees
there (its environment, the loader finding ``libcuda.so.1``) and what ``devdock-gpu-check`` tells a researcher on a
server without a GPU, with a GPU device but no driver, and with the (stand-in) driver.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.harness import RUN_ID, cdi_hub, make_device_nodes, run_in_kernel

BARE = f"GPU-bare{RUN_ID}-0000-0000-0000-000000000000"  # a device node and nothing of the driver
DRIVER = f"GPU-drv{RUN_ID}-0000-0000-0000-000000000001"  # a device node and the (stand-in) driver's files
LIBCUDA_PATH = "/usr/lib/x86_64-linux-gnu/libcuda.so.1"  # where the toolkit and nvidia-ctk's spec put it

# The functions devdock-gpu-check calls, answering as one 16 GiB GPU would; the "GPU memory" is this library's own.
# No libc (-nostdlib): a compiler and nothing else is needed; -O0 keeps the loop from becoming a call to memset.
STAND_IN_LIBCUDA = r"""
typedef unsigned long long u64;
static char memory[8 << 20];
int cuInit(unsigned flags) { return 0; }
int cuDriverGetVersion(int *version) { *version = 12040; return 0; }
int cuDeviceGetCount(int *count) { *count = 1; return 0; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return 0; }
int cuDeviceGetName(char *name, int length, int device) {
    const char *s = "Stand-in GPU"; int i = 0;
    for (; s[i] && i < length - 1; i++) name[i] = s[i];
    name[i] = 0; return 0;
}
int cuDeviceTotalMem_v2(unsigned long *bytes, int device) { *bytes = 16UL << 30; return 0; }
int cuCtxCreate_v2(void **context, unsigned flags, int device) { *context = memory; return 0; }
int cuMemAlloc_v2(u64 *pointer, unsigned long size) {
    if (size > sizeof memory) return 2;
    *pointer = (u64)memory; return 0;
}
int cuMemsetD8_v2(u64 pointer, unsigned char value, unsigned long size) {
    for (unsigned long i = 0; i < size; i++) ((char *)pointer)[i] = value;
    return 0;
}
int cuCtxSynchronize(void) { return 0; }
int cuMemFree_v2(u64 pointer) { return 0; }
int cuCtxDestroy_v2(void *context) { return 0; }
int cuGetErrorName(int error, const char **name) { *name = "CUDA_ERROR_UNKNOWN"; return 0; }
"""

STAND_IN_SMI = f"""#!/bin/sh
# A stand-in for nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,driver_version (csv, no header).
case "$1" in
  --query-gpu=*) echo "0, {DRIVER}, Stand-in GPU, 16384, 0, 550.00.00" ;;
  *) exit 2 ;;
esac
"""

PROFILES = [
    {"slug": "cpu", "display_name": "Desktop", "default": True},
    {"slug": "bare", "display_name": "A GPU, no driver", "gpus": 1, "gpu_ids": [BARE]},
    {"slug": "driver", "display_name": "A GPU and its driver", "gpus": 1, "gpu_ids": [DRIVER]},
]

# In a notebook cell, as a researcher would: the check's report and exit status, the environment a CUDA program
# reads, and where the loader finds libcuda.so.1 (or why not).
CELL = r"""
import ctypes, json, os, subprocess
check = subprocess.run(["devdock-gpu-check"], capture_output=True, text=True, timeout=300)
try:
    ctypes.CDLL("libcuda.so.1")
    maps = open("/proc/self/maps").read()
    libcuda = next((l.split()[-1] for l in maps.splitlines() if "libcuda.so" in l), "loaded")
except OSError as e:
    libcuda = f"not loaded: {e}"
names = ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "DEVDOCK_GPUS"]
print(json.dumps({"report": check.stdout, "stderr": check.stderr, "status": check.returncode, "libcuda": libcuda,
                  "env": {n: os.environ.get(n) for n in names}}))
"""


@pytest.fixture(scope="module")
def gpu_hub(docker_client, tmp_path_factory):
    info = docker_client.info()
    assert info.get("CDISpecDirs"), f"CDI is off on this engine (Docker {info.get('ServerVersion')})"
    folder = tmp_path_factory.mktemp("gpu-image")
    nodes = make_device_nodes(folder, 3)
    source = folder / "libcuda.c"
    source.write_text(STAND_IN_LIBCUDA)
    libcuda, smi = folder / "libcuda.so.1", folder / "nvidia-smi"
    subprocess.run(
        ["gcc", "-O0", "-shared", "-fPIC", "-nostdlib", "-o", str(libcuda), str(source)],
        check=True,
        capture_output=True,
    )
    smi.write_text(STAND_IN_SMI)
    for f in (libcuda, smi):
        f.chmod(0o755)
    bind = ["ro", "nosuid", "nodev", "bind"]
    spec = {
        "cdiVersion": "0.6.0",
        "kind": "nvidia.com/gpu",
        "devices": [
            {"name": BARE, "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0", "hostPath": nodes[0]}]}},
            {
                "name": DRIVER,
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/nvidia0", "hostPath": nodes[1]}],
                    "mounts": [
                        {"hostPath": str(libcuda), "containerPath": LIBCUDA_PATH, "options": bind},
                        {"hostPath": str(smi), "containerPath": "/usr/bin/nvidia-smi", "options": bind},
                    ],
                },
            },
        ],
        # As nvidia-ctk writes it: the control node for every GPU, and NVIDIA_VISIBLE_DEVICES=void (so that a
        # runtime hook adds nothing more).
        "containerEdits": {
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": [{"path": "/dev/nvidiactl", "hostPath": nodes[2]}],
        },
    }
    inventory = [{"index": i, "uuid": u, "name": "Stand-in GPU"} for i, u in enumerate((BARE, DRIVER))]
    folder = tmp_path_factory.mktemp("gpu-image-hub")
    with cdi_hub(docker_client, folder, f"devdock-test-image-{RUN_ID}", spec, inventory, PROFILES) as hub:
        yield hub


def _in_a_notebook(hub, user: str, profile: str) -> dict:
    hub.spawn(user, options={"profile": profile})
    result = run_in_kernel(hub.server_url(user), hub.token(user), CELL, timeout=300)
    assert result["status"] == "ok", result
    return json.loads(result["stdout"].strip().splitlines()[-1])


def _pid1_environment(container) -> dict:
    """PID 1's environment (the engine's CDI edits reach the container's processes, not docker exec)."""
    raw = container.exec_run(["cat", "/proc/1/environ"]).output.decode()
    return dict(e.split("=", 1) for e in raw.split("\0") if "=" in e)


def test_on_a_cpu_server_the_gpu_check_says_there_is_no_gpu_and_to_pick_a_gpu_profile(gpu_hub):
    seen = _in_a_notebook(gpu_hub, "gc-cpu", "cpu")
    report = seen["report"]
    assert report.splitlines()[2] == "This server has no GPU.", report
    assert "pick a GPU profile on the spawn form" in report
    # The check really rendered with OpenGL through EGL (Mesa's software renderer on a server without a GPU).
    assert "OpenGL renders in software (llvmpipe" in report and "this server has no GPU" in report
    assert seen["status"] == 1
    assert seen["libcuda"].startswith("not loaded: libcuda.so.1: cannot open shared object file"), seen
    assert seen["env"]["NVIDIA_VISIBLE_DEVICES"] == "void" and seen["env"]["DEVDOCK_GPUS"] is None
    gpu_hub.stop_server("gc-cpu")


def test_on_a_gpu_server_without_the_driver_the_check_names_the_device_and_what_to_ask_the_admin(gpu_hub):
    seen = _in_a_notebook(gpu_hub, "gc-bare", "bare")
    report = seen["report"]
    assert f"This server has 1 GPU: {BARE} (device /dev/nvidia0)" in report, report
    assert "The GPU device is there but the driver library libcuda.so.1 is not" in report
    assert "- Ask your admin to install the NVIDIA container toolkit or a CDI spec (docs/gpu.md)" in report
    assert seen["status"] == 1
    assert seen["libcuda"].startswith("not loaded:"), seen
    gpu_hub.stop_server("gc-bare")


def test_a_gpu_server_from_a_cdi_spec_has_what_a_cuda_program_needs(gpu_hub):
    seen = _in_a_notebook(gpu_hub, "gc-drv", "driver")
    env = seen["env"]
    # What CUDA reads (CUDA_VISIBLE_DEVICES: this server's GPU), with every capability devdock asks for ...
    assert env["CUDA_VISIBLE_DEVICES"] == env["DEVDOCK_GPUS"] == DRIVER, env
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility,graphics,video", env
    # NVIDIA_VISIBLE_DEVICES is the spec's "void", which wins over devdock's: only the toolkit's hook reads it, and the
    # check does not rely on it (DEVDOCK_GPUS and the device nodes say which GPU this is).
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void", env
    # ... and the loader finds the driver's library where the spec mounted it, as the user, by its plain name.
    assert seen["libcuda"] == LIBCUDA_PATH, seen
    report = seen["report"]
    assert "NVIDIA driver 550.00.00; nvidia-smi works." in report, report
    assert "A CUDA context opened on GPU 0 (Stand-in GPU) and 4 MiB of GPU memory were allocated, written" in report
    assert f"GPU 0: Stand-in GPU, 16 GiB memory [{DRIVER}]" in report
    # The stand-in has no OpenGL of the driver's: the check says so, and what to ask for.
    assert "OpenGL renders in software" in report and "'graphics' capability" in report
    assert seen["status"] == 1

    container = gpu_hub.container("gc-drv")
    pid1 = _pid1_environment(container)
    assert (
        pid1["CUDA_VISIBLE_DEVICES"] == DRIVER
        and pid1["NVIDIA_VISIBLE_DEVICES"] == seen["env"]["NVIDIA_VISIBLE_DEVICES"]
    )
    # The loader's configuration names Debian's library folder (where the toolkit and CDI put libcuda) and the
    # driver folder of gpu_mode "devices" (/usr/local/nvidia), so that the toolkit's ldconfig covers both.
    conf = container.exec_run(["sh", "-c", "cat /etc/ld.so.conf.d/*.conf"]).output.decode().split()
    assert {"/usr/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib"} <= set(conf), conf
    cache = container.exec_run(["ldconfig", "-p"]).output.decode()
    # the GL dispatch (glvnd) the driver's EGL library plugs into, in the loader's cache
    assert re.search(r"libEGL\.so\.1 \(libc6,x86-64\) => /(usr/)?lib/x86_64-linux-gnu/libEGL\.so\.1", cache), cache
    gpu_hub.stop_server("gc-drv")

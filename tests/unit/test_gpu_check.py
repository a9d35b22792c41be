"""devdock-gpu-check's decisions: what a server holds (facts) -> the sentences a researcher reads, and what to do.

The module lives in the desktop image (images/desktop/rootfs/opt/devdock/lib/devdock_gpu_check.py, run there by the
image's own Python); it is imported here from that path. The real command in real servers is
tests/integration/test_gpu_image.py.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.harness import ROOT

_path = ROOT / "images/desktop/rootfs/opt/devdock/lib/devdock_gpu_check.py"
_spec = importlib.util.spec_from_file_location("devdock_gpu_check", _path)
check = importlib.util.module_from_spec(_spec)
sys.modules["devdock_gpu_check"] = check  # dataclasses look their module up while the class is made
_spec.loader.exec_module(check)

UUID = "GPU-8f3c0e4a-1111-2222-3333-444455556666"
H100 = check.SmiGPU("0", UUID, "NVIDIA H100 80GB HBM3", 81559, 512)
SMI_OK = check.Smi(True, "", "550.54.15", [H100])
CUDA_OK = check.Cuda("libcuda.so.1", "", "", 12040, [check.CudaDevice("NVIDIA H100 80GB HBM3", 81559 * 2**20, True, 4)])
GL_NVIDIA = check.GL([("NVIDIA", "NVIDIA H100 80GB HBM3/PCIe/SSE2")])
GL_MESA = check.GL([("Mesa", "llvmpipe (LLVM 15.0.6, 256 bits)")])
NODE = ["/dev/nvidia0"]


def facts(**kw) -> check.Facts:
    return check.Facts(**kw)


WORKING = dict(allotted=[UUID], nodes=NODE, smi=SMI_OK, cuda=CUDA_OK, gl=GL_NVIDIA)

#: (id, facts, topic, ok, in the text, in what to do ("" : nothing to do))
TABLE = [
    (
        "cpu-server-has-no-gpu",
        facts(gl=GL_MESA),
        "GPUs",
        False,
        "without a GPU",
        "pick a GPU profile on the spawn form",
    ),
    ("cpu-server-opengl-in-software-is-fine", facts(gl=GL_MESA), "OpenGL", True, "this server has no GPU", ""),
    (
        "allotted-but-no-device-in-the-container",
        facts(allotted=[UUID]),
        "GPUs",
        False,
        f"devdock gave this server {UUID}, but no GPU device is in it",
        "the engine did not pass the GPU in",
    ),
    (
        "stand-in-device-names-the-device",
        facts(allotted=[UUID], nodes=NODE),
        "GPUs",
        True,
        f"This server has 1 GPU: {UUID} (device /dev/nvidia0)",
        "",
    ),
    (
        "device-without-libcuda",
        facts(allotted=[UUID], nodes=NODE),
        "CUDA",
        False,
        "The GPU device is there but the driver library libcuda.so.1 is not",
        "Ask your admin to install the NVIDIA container toolkit or a CDI spec (docs/gpu.md)",
    ),
    (
        "device-without-any-driver-file",
        facts(allotted=[UUID], nodes=NODE),
        "Driver",
        False,
        "Neither nvidia-smi nor the driver's libraries are in this server",
        "",  # what to ask for is the CUDA line's (the same toolkit or CDI spec brings both)
    ),
    ("working-gpu-named-with-memory", facts(**WORKING), "GPUs", True, "NVIDIA H100 80GB HBM3, 79.6 GiB memory", ""),
    ("working-driver-version", facts(**WORKING), "Driver", True, "NVIDIA driver 550.54.15", ""),
    ("working-cuda-context", facts(**WORKING), "CUDA", True, "A CUDA context opened on GPU 0", ""),
    ("working-opengl-on-the-gpu", facts(**WORKING), "OpenGL", True, "OpenGL renders on the GPU (NVIDIA H100", ""),
    (
        "nvidia-smi-fails",
        facts(**{**WORKING, "smi": check.Smi(True, "Failed to initialize NVML: Driver/library version mismatch")}),
        "Driver",
        False,
        "nvidia-smi is in this server but fails: Failed to initialize NVML",
        "the host needs a reboot",
    ),
    (
        "no-nvidia-smi-but-cuda-knows-the-driver",
        facts(**{**WORKING, "smi": check.Smi()}),
        "Driver",
        True,
        "supports CUDA up to 12.4; nvidia-smi is not in this server",
        "",
    ),
    (
        "cuda-driver-mismatch",
        facts(**{**WORKING, "cuda": check.Cuda("libcuda.so.1", "", "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH")}),
        "CUDA",
        False,
        "different versions",
        "generated again",
    ),
    (
        "cuda-unknown-error-points-at-nvidia-uvm",
        facts(**{**WORKING, "cuda": check.Cuda("libcuda.so.1", "", "CUDA_ERROR_UNKNOWN")}),
        "CUDA",
        False,
        "CUDA does not start",
        "/dev/nvidia-uvm",
    ),
    (
        "cuda-error-without-words-keeps-its-name",
        facts(**{**WORKING, "cuda": check.Cuda("libcuda.so.1", "", "CUDA_ERROR_INVALID_IMAGE")}),
        "CUDA",
        False,
        "(CUDA_ERROR_INVALID_IMAGE)",
        "Ask your admin, with this output",
    ),
    (
        "cuda-hangs",
        facts(**{**WORKING, "cuda": check.Cuda("libcuda.so.1", "", "the driver did not answer in 60 s")}),
        "CUDA",
        False,
        "the driver did not answer in 60 s",
        "Ask your admin",
    ),
    (
        "cuda-memory-full",
        facts(
            **{
                **WORKING,
                "cuda": check.Cuda(
                    "libcuda.so.1",
                    "",
                    "",
                    12040,
                    [check.CudaDevice("H100", 2**30, True, 0, "CUDA_ERROR_OUT_OF_MEMORY")],
                ),
            }
        ),
        "CUDA",
        False,
        "CUDA could not use GPU 0 (H100): the GPU's memory is full",
        "nvidia-smi lists them",
    ),
    (
        "cuda-sees-no-gpu",
        facts(**{**WORKING, "cuda": check.Cuda("libcuda.so.1", "", "", 12040, [])}),
        "CUDA",
        False,
        "CUDA starts but finds no GPU",
        "Ask your admin",
    ),
    (
        "opengl-in-software-on-a-gpu-server",
        facts(**{**WORKING, "gl": GL_MESA}),
        "OpenGL",
        False,
        "OpenGL renders in software (llvmpipe",
        "'graphics' capability",
    ),
    (
        "opengl-zink-on-nvidia-counts-as-gpu",
        facts(**{**WORKING, "gl": check.GL([("Mesa", "llvmpipe"), ("Mesa", "zink (NVIDIA H100 80GB HBM3)")])}),
        "OpenGL",
        True,
        "zink (NVIDIA H100",
        "",
    ),
    (
        "opengl-not-checkable-on-a-gpu-server",
        facts(**{**WORKING, "gl": check.GL([], "no EGL library")}),
        "OpenGL",
        False,
        "OpenGL could not be checked: no EGL library",
        "",
    ),
]


@pytest.mark.parametrize(("f", "topic", "ok", "text", "todo"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE])
def test_each_fact_gives_its_sentence_and_what_to_do(f, topic, ok, text, todo):
    (finding,) = [x for x in check.findings(f) if x.topic == topic]
    assert finding.ok is ok
    assert text in finding.text, finding.text
    if todo:
        assert todo in finding.todo, finding.todo
    elif ok:
        assert finding.todo == ""


def test_a_cpu_server_reports_no_driver_or_cuda_lines_only_that_it_has_no_gpu():
    text, status = check.report(facts(gl=GL_MESA))
    assert [x.topic for x in check.findings(facts(gl=GL_MESA))] == ["GPUs", "OpenGL"]
    assert "This server has no GPU." in text and "pick a GPU profile" in text
    assert status == 1


def test_a_working_server_says_so_in_one_line_and_exits_0():
    text, status = check.report(facts(**WORKING))
    assert "This server has 1 GPU, and everything works: CUDA and OpenGL run on it." in text
    assert "What to do:" not in text and "MISSING" not in text
    assert status == 0


def test_a_stand_in_gpu_server_lists_what_is_missing_and_what_to_ask():
    text, status = check.report(facts(allotted=[UUID], nodes=NODE, gl=GL_MESA))
    assert "This server has 1 GPU, but not everything works: Driver, CUDA, OpenGL (see below)." in text
    todo = text.split("What to do:\n", 1)[1].splitlines()
    assert todo[0].startswith("- Ask your admin to install the NVIDIA container toolkit or a CDI spec (docs/gpu.md)")
    assert len(todo) == 2 and "'graphics' capability" in todo[1]  # one sentence per thing to ask for, no repeats
    assert status == 1


SMI_TABLE = [
    (
        "one-gpu",
        "0, GPU-aaa, NVIDIA A100-SXM4-80GB, 81920, 3, 550.54.15\n",
        "550.54.15",
        [check.SmiGPU("0", "GPU-aaa", "NVIDIA A100-SXM4-80GB", 81920, 3)],
    ),
    (
        "not-a-number",
        "0, GPU-bbb, NVIDIA H200, [N/A], [N/A], 560.35.03\n",
        "560.35.03",
        [check.SmiGPU("0", "GPU-bbb", "NVIDIA H200", None, None)],
    ),
    ("a-message-not-a-row", "No devices were found\n", "", []),
]


@pytest.mark.parametrize(("output", "driver", "gpus"), [r[1:] for r in SMI_TABLE], ids=[r[0] for r in SMI_TABLE])
def test_nvidia_smi_rows_become_gpus_and_the_driver_version(output, driver, gpus):
    assert check.parse_smi(output) == (driver, gpus)


@pytest.mark.parametrize(("mib", "text"), [(512, "512 MiB"), (1024, "1 GiB"), (81559, "79.6 GiB"), (81920, "80 GiB")])
def test_memory_in_words(mib, text):
    assert check.gib(mib) == text


def test_unknown_arguments_print_the_usage_and_exit_2(capsys):
    assert check.main(["--frobnicate"]) == 2
    assert "devdock-gpu-check --json" in capsys.readouterr().err

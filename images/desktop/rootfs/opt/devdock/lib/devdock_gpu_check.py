"""devdock-gpu-check: what this server holds in GPUs, in plain words, and what to do about what is missing.

    devdock-gpu-check            the report (exit 0: every GPU this server was given works; 1: something is missing)
    devdock-gpu-check --json     the facts and the findings, for scripts

Run by ``/usr/local/bin/devdock-gpu-check`` with the image's own ``/usr/bin/python3 -I``, so that nothing a user
installs can break it, and with no framework: the facts come from the environment devdock set for the server, the
device nodes, ``nvidia-smi`` (when the driver's tools are in the container), the driver's own ``libcuda.so.1``
(ctypes: a CUDA context and a few MiB of memory) and OpenGL through EGL (ctypes: a context and its renderer string).
The probes that load the driver run in a child process with a time limit: a driver that hangs or crashes is reported,
not suffered.

Shape: gather the facts (I/O, ``gather``) -> decide (pure: ``findings(facts)``, each finding a sentence and, when
something is missing, the sentence of what to do or to ask the admin) -> print. tests/unit/test_gpu_check.py tests
the decisions from tables; tests/integration/test_gpu_image.py runs the command in real servers.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field

#: Where the driver's CUDA library is when the NVIDIA container toolkit or a CDI spec put it in (the loader's default
#: folder on Debian), or devdock's ``gpu_mode = "devices"`` mounted the host's driver folder (``gpu_driver_dir``).
LIBCUDA = ("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1")
NVIDIA_SMI = ("nvidia-smi", "/usr/bin/nvidia-smi", "/usr/local/nvidia/bin/nvidia-smi")
#: What the CUDA probe allocates on each GPU (and writes, and frees).
ALLOC_MIB = 4
#: A driver that does not answer in this long is reported as hanging.
PROBE_TIMEOUT = 60
DOCS = "docs/gpu.md"
#: Renderer strings of Mesa's software rasterisers: OpenGL on the CPU.
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software rasterizer", "lavapipe")
#: CUDA's error names, in words a researcher understands, and what to do about each.
CUDA_ERRORS = {
    "CUDA_ERROR_NO_DEVICE": (
        "the driver finds no GPU in this server",
        "Ask your admin: the GPU's device node is in the server but the driver does not see a GPU behind it "
        f"(is the GPU healthy on the host, does nvidia-smi list it there? {DOCS}).",
    ),
    "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH": (
        "the driver library in this server and the driver running on the host are different versions",
        "Ask your admin: after a driver upgrade the host needs a reboot, and a CDI spec must be generated again "
        f"(nvidia-ctk cdi generate; {DOCS}).",
    ),
    "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE": (
        "a CUDA forward-compatibility library is in this server, and this GPU does not support it",
        "Remove the cuda-compat package from your environment, or ask your admin for a newer driver on the host.",
    ),
    "CUDA_ERROR_OPERATING_SYSTEM": (
        "the operating system refused the driver a call",
        f"Ask your admin to check the host's kernel log for NVIDIA errors ({DOCS}, Health).",
    ),
    "CUDA_ERROR_OUT_OF_MEMORY": (
        "the GPU's memory is full",
        "Stop the programs that hold it (nvidia-smi lists them), or ask your admin who else uses this GPU.",
    ),
    "CUDA_ERROR_DEVICE_UNAVAILABLE": (
        "the GPU is busy with another program in exclusive mode",
        "Stop your other GPU programs, or ask your admin whether the GPU is shared (gpu_max_users_per_gpu).",
    ),
    "CUDA_ERROR_UNKNOWN": (
        "the driver failed without saying why (often: /dev/nvidia-uvm is missing)",
        "Ask your admin to give servers /dev/nvidia-uvm and /dev/nvidiactl (the container toolkit and a CDI spec do; "
        f"in gpu_mode 'devices' they are gpu_common_devices; {DOCS}).",
    ),
}


# --- facts ---------------------------------------------------------------------------------------------------------


@dataclass
class SmiGPU:
    index: str
    uuid: str
    name: str
    memory_mib: int | None
    used_mib: int | None


@dataclass
class Smi:
    """What nvidia-smi said: ``found`` False when it is not in the server."""

    found: bool = False
    error: str = ""
    driver: str = ""
    gpus: list[SmiGPU] = field(default_factory=list)


@dataclass
class CudaDevice:
    name: str
    memory_bytes: int
    context: bool = False
    allocated_mib: int = 0
    error: str = ""


@dataclass
class Cuda:
    """What the driver's libcuda.so.1 said: ``library`` empty when it could not be loaded."""

    library: str = ""
    load_error: str = ""
    error: str = ""  # a CUDA error name (cuInit's, say), or a sentence (a missing function, a crash, a hang)
    driver_version: int = 0  # 12040 is CUDA 12.4
    devices: list[CudaDevice] = field(default_factory=list)


@dataclass
class GL:
    """OpenGL through EGL: one (vendor, renderer) per EGL device that rendered; ``error`` when none did."""

    renderers: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""
    desktop: str = ""  # the desktop's own choice (devdock-gl-env's last line)


@dataclass
class Facts:
    allotted: list[str] = field(default_factory=list)  # DEVDOCK_GPUS: the GPUs devdock gave this server
    visible: str = ""  # NVIDIA_VISIBLE_DEVICES
    capabilities: str = ""  # NVIDIA_DRIVER_CAPABILITIES
    nodes: list[str] = field(default_factory=list)  # /dev/nvidia<N>: one per GPU
    control_nodes: list[str] = field(default_factory=list)  # /dev/nvidiactl, /dev/nvidia-uvm
    smi: Smi = field(default_factory=Smi)
    cuda: Cuda = field(default_factory=Cuda)
    gl: GL = field(default_factory=GL)


@dataclass
class Finding:
    topic: str  # GPUs, Driver, CUDA, OpenGL
    ok: bool
    text: str
    todo: str = ""  # what to do, or to ask the admin; empty when nothing is missing


# --- decisions (pure) ------------------------------------------------------------------------------------------------


def gib(mib: float) -> str:
    """1024 -> '1 GiB', 81559 -> '79.6 GiB', 512 -> '512 MiB'."""
    if mib < 1024:
        return f"{mib:.0f} MiB"
    value = mib / 1024
    return f"{value:.0f} GiB" if value == int(value) else f"{value:.1f} GiB"


def has_gpu(f: Facts) -> bool:
    """Anything at all says this server has a GPU: devdock's allotment, a device node, nvidia-smi or CUDA."""
    return bool(f.allotted or f.nodes or f.smi.gpus or f.cuda.devices)


def gpu_lines(f: Facts) -> list[str]:
    """One line per GPU, from the best source there is: nvidia-smi, then CUDA, then devdock's allotment and nodes."""
    if f.smi.gpus:
        lines = []
        for g in f.smi.gpus:
            memory = f", {gib(g.memory_mib)} memory" if g.memory_mib else ""
            used = f" ({gib(g.used_mib)} in use)" if g.used_mib else ""
            lines.append(f"GPU {g.index}: {g.name}{memory}{used} [{g.uuid}]")
        return lines
    if f.cuda.devices:
        return [f"GPU {i}: {d.name}, {gib(d.memory_bytes / 2**20)} memory" for i, d in enumerate(f.cuda.devices)]
    names = f.allotted or [os.path.basename(n) for n in f.nodes]
    nodes = f" (device {', '.join(f.nodes)})" if f.nodes else ""
    return [f"{', '.join(names)}{nodes}: its name and memory are unknown without the driver"]


def gpus_finding(f: Facts) -> Finding:
    if not has_gpu(f):
        return Finding(
            "GPUs",
            False,
            "None: this server was started without a GPU.",
            "To get one, stop this server (File > Hub Control Panel > Stop My Server) and pick a GPU profile on the "
            "spawn form; if the form offers none, ask your admin for one.",
        )
    if f.allotted and not (f.nodes or f.smi.gpus or f.cuda.devices):
        return Finding(
            "GPUs",
            False,
            f"devdock gave this server {', '.join(f.allotted)}, but no GPU device is in it (no /dev/nvidia0).",
            "Ask your admin: the engine did not pass the GPU in. Check gpu_mode and the NVIDIA container toolkit "
            f"or the CDI spec on the host ({DOCS}).",
        )
    count = len(f.smi.gpus or f.cuda.devices or f.nodes or f.allotted)
    head = f"This server has {count} GPU{'s' if count != 1 else ''}: "
    return Finding("GPUs", True, head + "; ".join(gpu_lines(f)) + ".")


def driver_finding(f: Facts) -> Finding | None:
    if not has_gpu(f):
        return None
    if f.smi.found and f.smi.error:
        return Finding(
            "Driver",
            False,
            f"nvidia-smi is in this server but fails: {f.smi.error}",
            "Ask your admin: the NVIDIA driver does not answer. After a driver upgrade the host needs a reboot, and "
            f"a CDI spec must be generated again ({DOCS}).",
        )
    if f.smi.found:
        return Finding("Driver", True, f"NVIDIA driver {f.smi.driver or '(version not reported)'}; nvidia-smi works.")
    if f.cuda.driver_version:
        major, minor = divmod(f.cuda.driver_version // 10, 100)
        return Finding(
            "Driver",
            True,
            f"The NVIDIA driver supports CUDA up to {major}.{minor}; nvidia-smi is not in this server.",
            "",
        )
    # What to ask for is the CUDA finding's sentence (the same toolkit or CDI spec brings both).
    return Finding("Driver", False, "Neither nvidia-smi nor the driver's libraries are in this server.")


def cuda_finding(f: Facts) -> Finding | None:
    if not has_gpu(f):
        return None
    c = f.cuda
    if not c.library:
        there = "The GPU device is there" if f.nodes else "devdock gave this server a GPU"
        return Finding(
            "CUDA",
            False,
            f"{there} but the driver library libcuda.so.1 is not: CUDA programs (PyTorch, JAX, CuPy) cannot use it.",
            f"Ask your admin to install the NVIDIA container toolkit or a CDI spec ({DOCS}): they put the driver's "
            "libraries and nvidia-smi in at run time.",
        )
    if c.error:
        what, todo = CUDA_ERRORS.get(c.error, (None, None))
        if what is None:
            what = c.error
            todo = f"Ask your admin, with this output ({DOCS})."
        return Finding("CUDA", False, f"CUDA does not start: {what} ({c.error}).", todo)
    if not c.devices:
        return Finding(
            "CUDA",
            False,
            "CUDA starts but finds no GPU.",
            f"Ask your admin: the driver is in the server but no GPU reaches it ({DOCS}).",
        )
    failed = [(i, d) for i, d in enumerate(c.devices) if not (d.context and d.allocated_mib)]
    if failed:
        i, d = failed[0]
        what, todo = CUDA_ERRORS.get(d.error, (d.error, f"Ask your admin, with this output ({DOCS})."))
        return Finding("CUDA", False, f"CUDA could not use GPU {i} ({d.name}): {what} ({d.error}).", todo)
    where = ", ".join(f"GPU {i} ({d.name})" for i, d in enumerate(c.devices))
    return Finding(
        "CUDA",
        True,
        f"A CUDA context opened on {where} and {c.devices[0].allocated_mib} MiB of GPU memory were allocated, "
        "written and freed: CUDA works. Frameworks bring their own CUDA libraries: after `pip install torch`, "
        "torch.cuda.is_available() is True.",
    )


def is_software(renderer: str) -> bool:
    return any(s in renderer.lower() for s in SOFTWARE_RENDERERS)


def gl_finding(f: Facts) -> Finding:
    g = f.gl
    desktop = f" The desktop: {g.desktop}." if g.desktop else ""
    on_gpu = [(v, r) for v, r in g.renderers if not is_software(r)]
    if on_gpu:
        vendor, renderer = on_gpu[0]
        return Finding("OpenGL", True, f"OpenGL renders on the GPU ({renderer}, {vendor}, through EGL).{desktop}")
    if g.renderers:
        renderer = g.renderers[0][1]
        if not has_gpu(f):
            return Finding("OpenGL", True, f"OpenGL renders in software ({renderer}): this server has no GPU.{desktop}")
        return Finding(
            "OpenGL",
            False,
            f"OpenGL renders in software ({renderer}): the NVIDIA driver's OpenGL is not in this server.{desktop}",
            "Ask your admin to give servers the GPU's 'graphics' capability (devdock asks for it; the container "
            f"toolkit then adds the driver's EGL and Vulkan files, as does a CDI spec from nvidia-ctk; {DOCS}).",
        )
    return Finding("OpenGL", not has_gpu(f), f"OpenGL could not be checked: {g.error or 'no EGL device'}.{desktop}")


def findings(f: Facts) -> list[Finding]:
    found = [gpus_finding(f), driver_finding(f), cuda_finding(f), gl_finding(f)]
    return [x for x in found if x is not None]


def summary(f: Facts, found: list[Finding]) -> str:
    if not has_gpu(f):
        return "This server has no GPU."
    missing = [x.topic for x in found if not x.ok]
    count = len(f.smi.gpus or f.cuda.devices or f.nodes or f.allotted)
    head = f"This server has {count} GPU{'s' if count != 1 else ''}"
    if not missing:
        return f"{head}, and everything works: CUDA and OpenGL run on it."
    return f"{head}, but not everything works: {', '.join(missing)} (see below)."


def report(f: Facts) -> tuple[str, int]:
    """The text a researcher reads, and the exit status (0: nothing missing)."""
    found = findings(f)
    lines = ["devdock GPU check", "", summary(f, found), ""]
    for x in found:
        lines.append(f"{x.topic + ':':8} {'ok' if x.ok else 'MISSING':8} {x.text}")
    todos = [x.todo for x in found if x.todo]
    if todos:
        lines += ["", "What to do:"] + [f"- {t}" for t in todos]
    return "\n".join(lines) + "\n", 0 if all(x.ok for x in found) else 1


# --- gathering (I/O) -------------------------------------------------------------------------------------------------


def parse_smi(output: str) -> tuple[str, list[SmiGPU]]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,driver_version --format=csv,noheader,nounits``
    lines -> (driver version, GPUs). Fields that are not numbers ("[N/A]" on a MIG GPU) are None."""

    def number(text: str) -> int | None:
        try:
            return int(float(text))
        except ValueError:
            return None

    driver, gpus = "", []
    for line in output.splitlines():
        fields = [x.strip() for x in line.split(",")]
        if len(fields) < 6:
            continue
        gpus.append(SmiGPU(fields[0], fields[1], fields[2], number(fields[3]), number(fields[4])))
        driver = fields[5]
    return driver, gpus


def which(candidates: tuple[str, ...]) -> str:
    for c in candidates:
        found = shutil.which(c)
        if found:
            return found
    return ""


def gather_smi() -> Smi:
    path = which(NVIDIA_SMI)
    if not path:
        return Smi()
    query = "--query-gpu=index,uuid,name,memory.total,memory.used,driver_version"
    try:
        r = subprocess.run([path, query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Smi(True, f"{e}")
    if r.returncode != 0:
        first = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.returncode}").splitlines()[0]
        return Smi(True, first)
    driver, gpus = parse_smi(r.stdout)
    return Smi(True, "", driver, gpus)


def run_probe(name: str) -> dict:
    """One probe in a child process (``--probe NAME``): a driver that hangs or crashes costs the child, not us."""
    try:
        r = subprocess.run(
            [sys.executable, "-I", os.path.abspath(__file__), "--probe", name],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"the driver did not answer in {PROBE_TIMEOUT} s", "unfinished": True}
    if r.returncode < 0:
        return {"error": f"the check crashed in the driver (signal {-r.returncode})", "unfinished": True}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (r.stderr.strip().splitlines() or ["the check printed nothing"])[-1]}


def gather_cuda() -> Cuda:
    data = run_probe("cuda")
    if data.get("unfinished"):  # it hung or crashed after loading the library
        return Cuda(library="libcuda.so.1", error=data["error"])
    devices = [CudaDevice(**d) for d in data.pop("devices", [])]
    return Cuda(**{k: v for k, v in data.items() if k in ("library", "load_error", "error", "driver_version")},
                devices=devices)  # fmt: skip


def gather_gl() -> GL:
    data = run_probe("egl")
    gl = GL([tuple(x) for x in data.get("renderers", [])], data.get("error", ""))
    chooser = "/opt/devdock/bin/devdock-gl-env"
    if os.access(chooser, os.X_OK):
        try:
            out = subprocess.run([chooser], capture_output=True, text=True, timeout=10).stdout.strip()
            gl.desktop = out.splitlines()[-1].removeprefix("# devdock: ") if out else ""
        except (OSError, subprocess.TimeoutExpired):
            pass
    return gl


def gather() -> Facts:
    env = os.environ
    nodes = sorted(glob.glob("/dev/nvidia[0-9]*"), key=lambda p: int("".join(c for c in p if c.isdigit()) or 0))
    return Facts(
        allotted=[x for x in env.get("DEVDOCK_GPUS", "").split(",") if x],
        visible=env.get("NVIDIA_VISIBLE_DEVICES", ""),
        capabilities=env.get("NVIDIA_DRIVER_CAPABILITIES", ""),
        nodes=nodes,
        control_nodes=[p for p in ("/dev/nvidiactl", "/dev/nvidia-uvm") if os.path.exists(p)],
        smi=gather_smi(),
        cuda=gather_cuda(),
        gl=gather_gl(),
    )


# --- probes (run in a child process) ---------------------------------------------------------------------------------


def probe_cuda() -> dict:
    """The driver's own API: cuInit, the GPUs it sees, and on each a context, a few MiB allocated, written, freed."""
    import ctypes

    lib, errors = None, []
    for candidate in LIBCUDA:
        try:
            lib = ctypes.CDLL(candidate)
            path = candidate
            break
        except OSError as e:
            errors.append(str(e))
    if lib is None:
        return {"library": "", "load_error": errors[0]}
    result: dict = {"library": path, "devices": []}

    def call(name, *args) -> int:
        fn = getattr(lib, name, None)
        if fn is None:
            raise LookupError(f"libcuda.so.1 has no {name}")
        fn.restype = ctypes.c_int
        return fn(*args)

    def error_name(code: int) -> str:
        text = ctypes.c_char_p()
        try:
            if call("cuGetErrorName", code, ctypes.byref(text)) == 0 and text.value:
                return text.value.decode()
        except LookupError:
            pass
        return f"CUDA error {code}"

    try:
        code = call("cuInit", 0)
        if code:
            return {**result, "error": error_name(code)}
        version, count = ctypes.c_int(), ctypes.c_int()
        call("cuDriverGetVersion", ctypes.byref(version))
        result["driver_version"] = version.value
        code = call("cuDeviceGetCount", ctypes.byref(count))
        if code:
            return {**result, "error": error_name(code)}
        for i in range(count.value):
            result["devices"].append(probe_cuda_device(call, error_name, i))
    except LookupError as e:
        result["error"] = str(e)
    return result


def probe_cuda_device(call, error_name, index: int) -> dict:
    import ctypes

    device, name, memory = ctypes.c_int(), ctypes.create_string_buffer(256), ctypes.c_size_t()
    call("cuDeviceGet", ctypes.byref(device), index)
    call("cuDeviceGetName", name, 256, device)
    call("cuDeviceTotalMem_v2", ctypes.byref(memory), device)
    out = {"name": name.value.decode(errors="replace"), "memory_bytes": memory.value}
    context, pointer, size = ctypes.c_void_p(), ctypes.c_uint64(), ALLOC_MIB * 2**20
    code = call("cuCtxCreate_v2", ctypes.byref(context), 0, device)
    if code:
        return {**out, "error": error_name(code)}
    out["context"] = True
    try:
        code = call("cuMemAlloc_v2", ctypes.byref(pointer), ctypes.c_size_t(size))
        if code:
            return {**out, "error": error_name(code)}
        code = call("cuMemsetD8_v2", pointer, ctypes.c_ubyte(0x5A), ctypes.c_size_t(size)) or call("cuCtxSynchronize")
        call("cuMemFree_v2", pointer)
        if code:
            return {**out, "error": error_name(code)}
        out["allocated_mib"] = ALLOC_MIB
    finally:
        call("cuCtxDestroy_v2", context)
    return out


def probe_egl() -> dict:
    """OpenGL ES through EGL on each EGL device (headless, as rendering libraries use it): vendor and renderer."""
    import ctypes

    egl_platform_device, egl_vendor, egl_opengl_es_api = 0x313F, 0x3053, 0x30A0
    egl_context_client_version, egl_none, gl_renderer = 0x3098, 0x3038, 0x1F01
    try:
        egl = ctypes.CDLL("libEGL.so.1")
        gles = ctypes.CDLL("libGLESv2.so.2")
    except OSError as e:
        return {"error": f"no EGL library ({e})"}
    vp, c_int = ctypes.c_void_p, ctypes.c_int
    egl.eglGetProcAddress.restype, egl.eglGetProcAddress.argtypes = vp, [ctypes.c_char_p]

    def ext(name, restype, *argtypes):
        address = egl.eglGetProcAddress(name.encode())
        if not address:
            raise LookupError(f"EGL has no {name}")
        return ctypes.CFUNCTYPE(restype, *argtypes)(address)

    try:
        query_devices = ext("eglQueryDevicesEXT", c_int, c_int, ctypes.POINTER(vp), ctypes.POINTER(c_int))
        platform_display = ext("eglGetPlatformDisplayEXT", vp, ctypes.c_uint, vp, ctypes.POINTER(c_int))
    except LookupError as e:
        return {"error": str(e)}
    egl.eglInitialize.argtypes = [vp, ctypes.POINTER(c_int), ctypes.POINTER(c_int)]
    egl.eglQueryString.restype, egl.eglQueryString.argtypes = ctypes.c_char_p, [vp, c_int]
    egl.eglCreateContext.restype, egl.eglCreateContext.argtypes = vp, [vp, vp, vp, ctypes.POINTER(c_int)]
    egl.eglMakeCurrent.argtypes = [vp, vp, vp, vp]
    egl.eglDestroyContext.argtypes = [vp, vp]
    egl.eglTerminate.argtypes = [vp]
    gles.glGetString.restype, gles.glGetString.argtypes = ctypes.c_char_p, [ctypes.c_uint]
    devices, count = (vp * 16)(), c_int()
    if not query_devices(16, devices, ctypes.byref(count)):
        return {"error": "EGL lists no devices"}
    renderers, errors = [], []
    for i in range(count.value):
        display = platform_display(egl_platform_device, devices[i], None)
        major, minor = c_int(), c_int()
        if not display or not egl.eglInitialize(display, ctypes.byref(major), ctypes.byref(minor)):
            errors.append(f"EGL device {i} did not initialise")
            continue
        vendor = (egl.eglQueryString(display, egl_vendor) or b"?").decode(errors="replace")
        egl.eglBindAPI(egl_opengl_es_api)
        attributes = (c_int * 3)(egl_context_client_version, 2, egl_none)
        context = egl.eglCreateContext(display, None, None, attributes)
        if context and egl.eglMakeCurrent(display, None, None, context):
            renderer = (gles.glGetString(gl_renderer) or b"").decode(errors="replace")
            renderers.append((vendor, renderer))
            egl.eglMakeCurrent(display, None, None, None)
            egl.eglDestroyContext(display, context)
        else:
            errors.append(f"{vendor}'s EGL device {i} opened no OpenGL ES context")
        egl.eglTerminate(display)
    return {"renderers": renderers, "error": "; ".join(errors) if not renderers else ""}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"] and len(argv) == 2 and argv[1] in ("cuda", "egl"):
        print(json.dumps(probe_cuda() if argv[1] == "cuda" else probe_egl()))
        return 0
    if argv not in ([], ["--json"]):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    facts = gather()
    text, status = report(facts)
    if argv == ["--json"]:
        print(json.dumps({"facts": asdict(facts), "findings": [asdict(x) for x in findings(facts)]}, indent=2))
    else:
        sys.stdout.write(text)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

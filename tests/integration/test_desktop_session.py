"""The desktop session as the real image runs it under the real hub: OpenGL (software without a GPU), fonts for
other scripts, the language and keyboard a profile chooses, and one home for JupyterLab and the desktop.

Everything is read from the running desktop itself: its X server, the environment of its XFCE session process,
programs run on its display as the user."""

from __future__ import annotations

import re
import time

import pytest
import requests

PROFILES = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {
        "slug": "deutsch",
        "display_name": "Desktop auf Deutsch",
        "overrides": {"desktop_locale": "de_DE.UTF-8", "desktop_keyboard_layout": "de(nodeadkeys)"},
    },
]


@pytest.fixture(scope="module")
def hub(make_hub):
    # The desktop starts with the server, as shipped (the harness's hubs start it when it is first opened).
    return make_hub(
        "desktop-session", desktop_prestart=True, extra_config=f"c.DevDockSpawner.profile_list = {PROFILES!r}\n"
    )


def _in_desktop(container, script: str, timeout: float = 60) -> str:
    """Run ``script`` as the user on the desktop's display, with the desktop session's own environment (that of
    its xfce4-session process), once the session runs. Returns its output."""
    wrapped = (
        "pid=$(pgrep -u \"$(id -u)\" -x xfce4-session | head -n 1); [ -n \"$pid\" ] || exit 75; "
        "while IFS= read -r -d '' kv; do case $kv in DISPLAY=*|GALLIUM_DRIVER=*|LIBGL_ALWAYS_SOFTWARE=*|"
        "MESA_LOADER_DRIVER_OVERRIDE=*|__GLX_VENDOR_LIBRARY_NAME=*|LANG=*|LC_ALL=*|LANGUAGE=*|XAUTHORITY=*) "
        'export "$kv";; esac; done < /proc/$pid/environ; ' + script
    )
    deadline = time.monotonic() + timeout
    while True:
        result = container.exec_run(["bash", "-c", wrapped], user="1000")
        if result.exit_code != 75:
            return result.output.decode(errors="replace")
        assert time.monotonic() < deadline, "the desktop session did not start"
        time.sleep(0.5)


def test_desktop_opengl_falls_back_to_mesa_software_without_a_gpu_and_a_gl_program_draws(hub):
    hub.spawn("ds-gil")
    container = hub.container("ds-gil")
    info = _in_desktop(container, "glxinfo -B")
    renderer = re.search(r"OpenGL renderer string: (.*)", info)
    assert renderer and "llvmpipe" in renderer.group(1), info
    assert "direct rendering: Yes" in info, info
    # glxgears draws on the desktop's display and counts its frames (every 5 seconds).
    gears = _in_desktop(container, "timeout 7 glxgears 2>&1; true")
    frames = re.search(r"(\d+) frames in 5\.\d+ seconds", gears)
    assert frames and int(frames.group(1)) > 10, gears
    log = container.exec_run(["cat", "/home/ds-gil/.cache/devdock/desktop-gl.log"]).output.decode()
    assert "software (Mesa llvmpipe): the server holds no GPU" in log, log
    hub.stop_server("ds-gil")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DEVDOCK_GPUS": "GPU-1", "VK_DRIVER_FILES": "/tmp/nvidia_icd.json"}, "MESA_LOADER_DRIVER_OVERRIDE=zink"),
        ({"DEVDOCK_GPUS": "GPU-1"}, "no NVIDIA Vulkan driver is in the container"),
        (
            {"DEVDOCK_GPUS": "GPU-1", "DEVDOCK_GL": "software", "VK_DRIVER_FILES": "/tmp/nvidia_icd.json"},
            "the site chose software rendering",
        ),  # fmt: skip
        ({}, "the server holds no GPU"),
    ],
    ids=["gpu-with-vulkan-driver", "gpu-without-driver", "software-chosen", "no-gpu"],
)
def test_desktop_opengl_choice_of_the_image(docker_client, env, expected):
    """The image's own decision (devdock-gl-env), with a stand-in NVIDIA Vulkan driver file: which renderer."""
    out = docker_client.containers.run(
        "devdock/desktop:latest",
        ["sh", "-c", "echo '{}' > /tmp/nvidia_icd.json; /opt/devdock/bin/devdock-gl-env"],
        entrypoint=[],
        environment=env,
        remove=True,
        network_mode="none",
    ).decode()
    assert expected in out, out
    assert ("LIBGL_ALWAYS_SOFTWARE=1" in out) == ("zink" not in expected), out


def test_desktop_fonts_cover_cjk_and_emoji(hub):
    hub.spawn("ds-fon")
    container = hub.container("ds-fon")
    found = {}
    for lang in ("zh-cn", "ja", "ko"):
        found[lang] = _in_desktop(container, f"fc-match -f '%{{family}}' 'sans-serif:lang={lang}'").strip()
    assert "Noto Sans CJK SC" in found["zh-cn"] and "Noto Sans CJK JP" in found["ja"], found
    assert "Noto Sans CJK KR" in found["ko"], found
    # Fonts that cover other scripts of papers and names (fontconfig's own coverage tables).
    for lang, family in (("hi", "Noto Sans Devanagari"), ("ar", "Noto Sans Arabic"), ("he", "Noto Sans Hebrew"),
                         ("th", "Noto Sans Thai"), ("el", "Noto Sans")):  # fmt: skip
        assert family in _in_desktop(container, f"fc-list ':lang={lang}' family"), lang
    emoji = _in_desktop(container, "fc-match -f '%{family}' emoji").strip()
    assert emoji == "Noto Color Emoji", emoji
    hub.stop_server("ds-fon")


def test_desktop_locale_and_keyboard_layout_per_profile(hub):
    hub.spawn("ds-lea", options={"profile": "deutsch"})
    container = hub.container("ds-lea")
    weekday = _in_desktop(container, "locale | grep ^LANG=; date -d 2026-12-02 +%A")
    assert "LANG=de_DE.UTF-8" in weekday and "Mittwoch" in weekday, weekday
    keyboard = _in_desktop(container, "setxkbmap -query")
    assert re.search(r"layout:\s+de\b", keyboard) and re.search(r"variant:\s+nodeadkeys", keyboard), keyboard
    hub.stop_server("ds-lea")
    # The control: the default profile keeps the image's language and the X server's keyboard.
    hub.spawn("ds-lea", options={"profile": "desktop"})
    container = hub.container("ds-lea")
    weekday = _in_desktop(container, "locale | grep ^LANG=; date -d 2026-12-02 +%A")
    assert "LANG=en_US.UTF-8" in weekday and "Wednesday" in weekday, weekday
    assert re.search(r"layout:\s+us\b", _in_desktop(container, "setxkbmap -query"))
    hub.stop_server("ds-lea")


def test_desktop_and_jupyterlab_share_the_home_files_go_both_ways(hub):
    hub.spawn("ds-fil")
    token = hub.token("ds-fil")
    headers = {"Authorization": f"token {token}"}
    base = hub.server_url("ds-fil")
    # A file uploaded through JupyterLab's contents API (what its upload button does), through the hub's proxy ...
    upload = {"type": "file", "format": "text", "content": "uploaded in JupyterLab\n"}
    r = requests.put(f"{base}api/contents/from-lab.txt", json=upload, headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    container = hub.container("ds-fil")
    # ... is in the desktop's home, and a file a desktop program saves downloads from JupyterLab.
    seen = _in_desktop(container, "cat ~/from-lab.txt; echo 'saved on the desktop' > ~/Desktop-note.txt")
    assert seen.strip() == "uploaded in JupyterLab", seen
    download = requests.get(f"{base}files/Desktop-note.txt", headers=headers, timeout=30)
    assert download.status_code == 200 and download.text == "saved on the desktop\n", download.text
    hub.stop_server("ds-fil")

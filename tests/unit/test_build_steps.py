"""images/build.sh's shell steps that change a base image's settings, run on sample files (bash, no image)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIRROR = "http://mirror.example.org/debian"

# (id, os-release ID, sources file, its text, expected text)
CASES = [
    (
        "debian-deb822",
        "debian",
        "etc/apt/sources.list.d/debian.sources",
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n",
        f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm bookworm-updates\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n",
    ),
    (
        "debian-list",
        "debian",
        "etc/apt/sources.list",
        "deb http://deb.debian.org/debian bookworm main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n",
        f"deb {MIRROR} bookworm main\ndeb http://deb.debian.org/debian-security bookworm-security main\n",
    ),
    (
        "ubuntu-deb822",
        "ubuntu",
        "etc/apt/sources.list.d/ubuntu.sources",
        "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\nSuites: noble noble-updates\n\n"
        "Types: deb\nURIs: http://security.ubuntu.com/ubuntu/\nSuites: noble-security\n",
        f"Types: deb\nURIs: {MIRROR}\nSuites: noble noble-updates\n\n"
        "Types: deb\nURIs: http://security.ubuntu.com/ubuntu/\nSuites: noble-security\n",
    ),
]


@pytest.mark.parametrize(("os_id", "path", "text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_apt_mirror_replaces_the_main_archive_and_keeps_security(tmp_path, os_id, path, text, expected):
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/os-release").write_text(f"ID={os_id}\n")
    (tmp_path / path).write_text(text)
    function = subprocess.run(
        ["sed", "-n", "/^use_apt_mirror()/,/^}/p", str(ROOT / "images/build.sh")], capture_output=True, text=True
    ).stdout
    script = f"log() {{ :; }}\n{function}\nuse_apt_mirror\n"
    env = {"APT_MIRROR": MIRROR, "APT_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / path).read_text() == expected

"""Dependency floors above every advisory known today, and what is installed against them (tests/advisories.py)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

from tests.advisories import ADVISORIES, IMAGE_ADVISORIES

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        match = re.search(r">=\s*([0-9][^,; ]*)", requirement)
        if match:
            floors[_name(requirement)] = Version(match.group(1))
    return floors


def _image_pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "images/desktop/requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, pinned = line.partition("==")
            pins[name.strip().lower()] = Version(pinned.strip())
    return pins


@pytest.mark.parametrize(("package", "fixed"), [(a[0], a[2]) for a in ADVISORIES], ids=[a[1] for a in ADVISORIES])
def test_dependency_floor_is_above_the_advisory(package, fixed):
    floors = _floors()
    assert package in floors, f"pyproject.toml has no floor for {package}"
    assert floors[package] >= Version(fixed), f"{package}>={floors[package]} admits a version before {fixed}"


@pytest.mark.parametrize(("package", "fixed"), [(a[0], a[2]) for a in ADVISORIES], ids=[a[1] for a in ADVISORIES])
def test_installed_dependency_is_above_the_advisory(package, fixed):
    assert Version(version(package)) >= Version(fixed)


@pytest.mark.parametrize(
    ("package", "fixed"), [(a[0], a[2]) for a in IMAGE_ADVISORIES], ids=[a[1] for a in IMAGE_ADVISORIES]
)
def test_desktop_image_pin_is_above_the_advisory(package, fixed):
    pins = _image_pins()
    assert package in pins, f"images/desktop/requirements.txt pins no {package}"
    assert pins[package] >= Version(fixed)


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "images/hub/requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = Version(pinned.strip())
    return pins


def test_the_hub_lock_pins_every_dependency_above_its_floor():
    lock = _lock()
    for name, floor in _floors().items():
        assert name in lock, f"images/hub/requirements.lock has no {name}: run scripts/lock.sh"
        assert lock[name] >= floor, f"the lock pins {name}=={lock[name]}, below pyproject's >={floor}"


@pytest.mark.parametrize(("package", "fixed"), [(a[0], a[2]) for a in ADVISORIES], ids=[a[1] for a in ADVISORIES])
def test_the_hub_lock_is_above_the_advisory(package, fixed):
    assert _lock()[package] >= Version(fixed)

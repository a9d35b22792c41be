"""The image's own Python, imported from its files in images/ (it runs there on the image's Python; the hub's package
is not in the images' build context, so the unit tests are where the two sides meet)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESKTOP_ROOTFS = ROOT / "images/desktop/rootfs"
GATEWAY = ROOT / "images/ssh-gateway"


def load(name: str, path: Path, package: bool = False):
    """The module (or package, from its ``__init__.py``) at ``path``, registered as ``name``; extensionless
    scripts too."""
    if name in sys.modules:
        return sys.modules[name]
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    locations = [str(path.parent)] if package else None
    spec = importlib.util.spec_from_file_location(name, path, loader=loader, submodule_search_locations=locations)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while a class is made
    path_before = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path_before  # the gateway's scripts add their folder in the image
    return module


def devdock_ext():
    return load("devdock_ext", DESKTOP_ROOTFS / "opt/devdock/lib/devdock_ext/__init__.py", package=True)


def gatewaylib():
    return load("gatewaylib", GATEWAY / "gatewaylib.py")


def gateway_keys():
    gatewaylib()  # the script imports it from its place in the image, which sys.modules stands in for
    return load("devdock_gateway_keys", GATEWAY / "devdock-gateway-keys")


def gateway_connect():
    gatewaylib()
    return load("devdock_gateway_connect", GATEWAY / "devdock-gateway-connect")

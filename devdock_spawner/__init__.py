"""devdock: a JupyterHub spawner that gives every user a GPU-ready Linux desktop in the browser.

Importing this package does no I/O: JupyterHub imports every spawner entry point at start-up. The spawner classes
are imported when first asked for (PEP 562), so that the small programs of this package that run without a hub
(``devdock-home-image`` in the home helper, one ``docker exec`` per step of every start) start in milliseconds
instead of importing JupyterHub first.
"""

from ._version import __version__

__all__ = ["DevDockSpawner", "DevDockSwarmSpawner", "__version__"]


def __getattr__(name: str):
    if name == "DevDockSpawner":
        from .spawner import DevDockSpawner

        return DevDockSpawner
    if name == "DevDockSwarmSpawner":
        from .spawner_swarm import DevDockSwarmSpawner

        return DevDockSwarmSpawner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

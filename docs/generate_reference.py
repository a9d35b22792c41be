"""Generate docs/reference/spawner.md from the traits' help strings: the help *is* the documentation.

.venv/bin/python docs/generate_reference.py          # rewrite the file
.venv/bin/python docs/generate_reference.py --check  # exit 1 if it is out of date (run by the tests)
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from dockerspawner import DockerSpawner

from devdock_spawner import DevDockSpawner, DevDockSwarmSpawner

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs/generated.py, beside this script
from generated import write_or_check  # noqa: E402

OUT = Path(__file__).parent / "reference" / "spawner.md"


def _section(cls, base, own_modules: tuple[str, ...]) -> list[str]:
    """The settings ``cls`` defines itself (in ``own_modules``), then the defaults it changes from ``base``."""
    own = {
        name: trait
        for name, trait in cls.class_traits(config=True).items()
        if trait.this_class.__module__ in own_modules
    }
    lines = []
    for name in sorted(own):
        trait = own[name]
        default = trait.default_value_repr()
        default = "computed, see below" if default == "traitlets.Undefined" else default
        lines += [
            f"## `c.{cls.__name__}.{name}`",
            "",
            f"*{type(trait).__name__}*, default {default if default.startswith('computed') else f'`{default}`'}",
            "",
        ]
        lines += [inspect.cleandoc(trait.help), ""]
    lines += [f"## Defaults changed from {base.__name__}", ""]
    for name in sorted(cls.class_trait_names(config=True)):
        if name in own or not hasattr(cls, f"_default_{name}"):
            continue
        if getattr(cls, f"_default_{name}") is getattr(base, f"_default_{name}", None):
            continue
        handler = getattr(cls, f"_default_{name}")
        doc = inspect.getdoc(getattr(handler, "func", handler)) or ""
        lines.append(f"- `{name}`{': ' + doc if doc else ''}")
    return lines


def render() -> str:
    lines = [
        "# DevDockSpawner configuration reference",
        "",
        "Generated from the traits' help strings by `docs/generate_reference.py`; do not edit by hand.",
        "Settings inherited from DockerSpawner and JupyterHub's Spawner apply too; the ones whose",
        "default devdock changes are listed at the end of each part.",
        "",
    ]
    # devdock's own settings: those defined by DevDockSpawner and its mixins (one module per concern).
    mixins = tuple(
        f"devdock_spawner.{m.__module__.rsplit('.', 1)[-1]}"
        for m in DevDockSpawner.__mro__
        if (m.__module__.startswith("devdock_spawner.spawner") or m.__module__ == "devdock_spawner.hubwide")
        and m.__module__ != "devdock_spawner.spawner_swarm"
    )
    lines += _section(DevDockSpawner, DockerSpawner, mixins)
    lines += [
        "",
        "# DevDockSwarmSpawner (`devdock-swarm`)",
        "",
        "Everything above applies (set it on `c.DevDockSpawner` or `c.DevDockSwarmSpawner`), plus these; see",
        "[the scale-out guide](../scale-out.md).",
        "",
    ]
    lines += _section(DevDockSwarmSpawner, DevDockSpawner, ("devdock_spawner.spawner_swarm",))
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    return write_or_check(OUT, render(), sys.argv, "generate_reference.py")


if __name__ == "__main__":
    sys.exit(main())

"""Generate docs/reference/spawner.md from the traits' help strings: the help *is* the documentation.

.venv/bin/python docs/generate_reference.py          # rewrite the file
.venv/bin/python docs/generate_reference.py --check  # exit 1 if it is out of date (run by the tests)
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from dockerspawner import DockerSpawner

from devdock_spawner import DevDockSpawner

OUT = Path(__file__).parent / "reference" / "spawner.md"


def render() -> str:
    lines = [
        "# DevDockSpawner configuration reference",
        "",
        "Generated from the traits' help strings by `docs/generate_reference.py`; do not edit by hand.",
        "Settings inherited from DockerSpawner and JupyterHub's Spawner apply too; the ones whose",
        "default devdock changes are listed at the end.",
        "",
    ]
    # devdock's own settings: those defined by DevDockSpawner and its mixins (SSH, GPUs).
    own = {
        name: trait
        for name, trait in DevDockSpawner.class_traits(config=True).items()
        if trait.this_class.__module__.startswith("devdock_spawner")
    }
    for name in sorted(own):
        trait = own[name]
        default = trait.default_value_repr()
        lines += [f"## `c.DevDockSpawner.{name}`", "", f"*{type(trait).__name__}*, default `{default}`", ""]
        lines += [inspect.cleandoc(trait.help), ""]
    lines += ["## Defaults changed from DockerSpawner", ""]
    for name in sorted(DevDockSpawner.class_trait_names(config=True)):
        if name in own or not hasattr(DevDockSpawner, f"_default_{name}"):
            continue
        if getattr(DevDockSpawner, f"_default_{name}") is getattr(DockerSpawner, f"_default_{name}", None):
            continue
        doc = inspect.getdoc(getattr(DevDockSpawner, f"_default_{name}")) or ""
        lines.append(f"- `{name}`{': ' + doc if doc else ''}")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python docs/generate_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

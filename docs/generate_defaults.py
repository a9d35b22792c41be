"""Generate docs/reference/defaults.md: every DEVDOCK_* default and where it is set, read from the files that set it.

.venv/bin/python docs/generate_defaults.py          # rewrite the file
.venv/bin/python docs/generate_defaults.py --check  # exit 1 if it is out of date (run by the tests)

Four places decide a setting's value, and a reader should never have to reconcile them by hand:
  - the trait's own default (what a site's own hub configuration gets: ``c.DevDockSpawner.home_size``);
  - ``jupyterhub_config.py`` (and ``devdock_spawner/hubconfig.py``, which it calls): ``env("DEVDOCK_X", default)``;
  - ``scripts/up.sh``: ``export DEVDOCK_X=${DEVDOCK_X:-default}`` before it starts the hub;
  - ``docker-compose.yml``: the hub service's ``DEVDOCK_X=${DEVDOCK_X:-default}`` (or a fixed value, or not passed).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs/generated.py, beside this script
from generated import write_or_check  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "reference" / "defaults.md"
ENV_CALLS = {"env", "env_int", "env_flag", "env_list"}


def _value_text(node: ast.AST | None, call: str, source: str) -> str:
    if node is None:
        return "(empty)" if call != "env_flag" else ""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        value = _evaluate(ast.get_source_segment(source, node))
    if call == "env_flag":
        return "1" if value else "0"
    return str(value) if value != "" else "(empty)"


def _evaluate(expression: str):
    """A default written as an expression (``8 * 3600``, ``culler.IDLE_TIMEOUT``): its value, or its text."""
    from devdock_spawner import culler

    try:
        return eval(expression, {"__builtins__": {}}, {"culler": culler})  # noqa: S307 - the project's own files
    except Exception:  # noqa: BLE001 - an expression of the hub's state (a variable): shown as written
        return expression


def _target(node: ast.AST) -> str:
    """``c.DevDockSpawner.home_size`` -> ``DevDockSpawner.home_size`` ("" for anything else)."""
    text = ast.unparse(node)
    match = re.fullmatch(r"c\.(\w+)\.(\w+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def config_defaults(path: Path) -> dict[str, dict]:
    """``{"DEVDOCK_X": {"default": ..., "trait": "Class.name"}}`` for every env helper call with a literal name."""
    source = path.read_text()
    tree = ast.parse(source)
    found: dict[str, dict] = {}
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ENV_CALLS):
            continue
        if not (
            node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("DEVDOCK_")
        ):
            continue
        name = node.args[0].value
        default = _value_text(node.args[1] if len(node.args) > 1 else None, node.func.id, source)
        trait, up = "", parents.get(node)
        while up is not None and not isinstance(up, ast.stmt):
            up = parents.get(up)
        if isinstance(up, ast.Assign):
            trait = _target(up.targets[0])
            following = _next_statement(up, parents)
            if not trait and isinstance(up.targets[0], ast.Name) and isinstance(following, ast.Assign):
                # home_size = env(...) then c.DevDockSpawner.home_size = ... home_size ...: that one sets it
                names = {n.id for n in ast.walk(following.value) if isinstance(n, ast.Name)}
                if up.targets[0].id in names:
                    trait = _target(following.targets[0])
        entry = found.setdefault(name, {"default": NOTES.get(name, default), "trait": trait})
        entry["trait"] = entry["trait"] or trait
        if name not in NOTES and default not in entry["default"].split(" / "):
            entry["default"] += f" / {default}"  # read twice with two defaults (say, with and without Swarm)
    return found


#: Defaults that are computed when the hub starts, said in words.
NOTES = {
    "DEVDOCK_HUB_IP": "the gateway address of DEVDOCK_NETWORK (Swarm: 0.0.0.0)",
    "DEVDOCK_HUB_CONNECT_IP": "DEVDOCK_HUB_IP",
    "DEVDOCK_DATA_DIR": "the hub's working directory (up.sh: .devdock in the checkout)",
    "DEVDOCK_ADMIN_USERS": "admin with the dummy authenticator, none with oauth",
    "DEVDOCK_OAUTH_GROUPS_CLAIM": "groups when allowed or admin groups are set, else none",
}


def _next_statement(statement: ast.stmt, parents: dict) -> ast.stmt | None:
    body = getattr(parents.get(statement), "body", [])
    if statement in body and body.index(statement) + 1 < len(body):
        return body[body.index(statement) + 1]
    return None


def trait_default(trait: str) -> str:
    if not trait:
        return ""
    cls_name, name = trait.split(".")
    from jupyterhub.app import JupyterHub
    from jupyterhub.proxy import ConfigurableHTTPProxy

    from devdock_spawner import DevDockSpawner, DevDockSwarmSpawner

    classes = {
        "DevDockSpawner": DevDockSpawner,
        "DevDockSwarmSpawner": DevDockSwarmSpawner,
        "JupyterHub": JupyterHub,
        "ConfigurableHTTPProxy": ConfigurableHTTPProxy,
    }
    cls = classes.get(cls_name)
    if cls is None or not cls.class_traits().get(name):
        return ""
    value = cls.class_traits()[name].default_value_repr()
    return "(computed)" if value == "traitlets.Undefined" else value


def up_sh_defaults(path: Path) -> dict[str, str]:
    text = path.read_text()
    found = {}
    for name, default in re.findall(r"=\"?\$\{(DEVDOCK_\w+):-([^}]*)\}", text):  # assignments, not messages
        found.setdefault(name, default or "(empty)")
    return found


def compose_hub(path: Path) -> dict[str, str]:
    """The hub service's environment: ``default`` of ``${X:-default}``, a fixed value, or "passed when set"."""
    entries = yaml.safe_load(path.read_text())["services"]["hub"]["environment"]
    found = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not name.startswith("DEVDOCK_"):
            continue
        match = re.fullmatch(r"\$\{(\w+):-(.*)\}", value)
        if not sep:
            found[name] = "passed when set"
        elif match and match.group(1) == name:
            found[name] = match.group(2) or "(empty)"
        else:
            found[name] = f"fixed: {value}"
    return found


def render() -> str:
    config = config_defaults(ROOT / "jupyterhub_config.py")
    for name, entry in config_defaults(ROOT / "devdock_spawner" / "hubconfig.py").items():
        config.setdefault(name, entry)
    up = up_sh_defaults(ROOT / "scripts" / "up.sh")
    compose = compose_hub(ROOT / "docker-compose.yml")
    lines = [
        "# Defaults, and where each is set",
        "",
        "<!-- Generated by docs/generate_defaults.py from jupyterhub_config.py, devdock_spawner/hubconfig.py,",
        "     scripts/up.sh, docker-compose.yml and the traits; tests/unit/test_host_setup.py checks it. -->",
        "",
        "What a hub gets for each `DEVDOCK_*` variable it reads, and which file decides it. Read a row from the",
        "right: docker compose passes its value (or, \"passed when set\", only what `.env` sets); `scripts/up.sh`",
        "exports its own before the hub starts; otherwise `jupyterhub_config.py`'s default applies. A site's own",
        "hub configuration (`c.JupyterHub.spawner_class = \"devdock\"` without devdock's `jupyterhub_config.py`) gets",
        "the trait's default: [the hub says which of devdock's guarantees it then lacks]"
        "(../deployment.md#your-own-hub-configuration).",
        "",
        "| variable | setting | trait default (own hub config) | `jupyterhub_config.py` | `scripts/up.sh` "
        "| `docker compose` |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(set(config) | set(compose)):
        entry = config.get(name, {"default": "", "trait": ""})
        trait = entry["trait"]
        lines.append(
            f"| `{name}` | {f'`{trait}`' if trait else ''} | {_code(trait_default(trait))} | {_code(entry['default'])} "
            f"| {_code(up.get(name, ''))} | {_code(compose.get(name, 'not passed'))} |"
        )
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    if not text or text in ("passed when set", "not passed"):
        return text
    return f"`{text.replace('|', '&#124;')}`"


def main(argv: list[str]) -> int:
    return write_or_check(OUT, render(), argv, "generate_defaults.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

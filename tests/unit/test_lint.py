"""The lint step (scripts/lint.sh, run by scripts/test.sh) reaches every script, the extensionless ones too."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.unit.image_code import ROOT


def _linted() -> dict[str, set[str]]:
    listing = subprocess.run([ROOT / "scripts/lint.sh", "--list"], capture_output=True, text=True, check=True).stdout
    files: dict[str, set[str]] = {"python": set(), "shell": set()}
    for line in listing.splitlines():
        tool, _, path = line.partition(" ")
        files[tool].add(path)
    return files


def _first_line(path) -> str:
    with open(path, "rb") as f:
        return f.readline().decode(errors="replace")


def test_every_shell_script_of_the_images_and_scripts_is_shellchecked():
    linted = _linted()["shell"]
    scripts = {str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*.sh")}
    in_images = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "images").rglob("*")
        if p.is_file()
        and "node_modules" not in p.parts
        and (p.suffix == ".sh" or re.match(r"#!(/bin/(ba)?sh|/usr/bin/env (ba)?sh)\b", _first_line(p)))
    }
    assert {"images/desktop/rootfs/opt/devdock/bin/devdock-entrypoint", "images/hub/devdock-hub"} <= in_images
    assert scripts | in_images | {"tests/fresh/engine.sh"} == linted


def test_the_images_python_scripts_without_an_extension_are_linted_too():
    linted = _linted()["python"]
    assert {"devdock_spawner", "tests", "images"} <= linted  # ruff finds the *.py files below these itself
    extensionless = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "images").rglob("*")
        if p.is_file() and not p.suffix and _first_line(p).startswith("#!") and "python" in _first_line(p)
    }
    assert "images/ssh-gateway/devdock-gateway-connect" in extensionless
    assert extensionless <= linted


def test_test_sh_installs_shellcheck_and_runs_the_lint_script():
    text = (ROOT / "scripts/test.sh").read_text()
    assert re.search(r"need_apt\+=\([^)]*\bshellcheck\b", text), "test.sh never installs shellcheck"
    assert re.search(r"^scripts/lint\.sh$", text, re.M)


def test_pre_commit_runs_shellcheck_and_keeps_the_contract_reference_current():
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]}
    assert hooks["shellcheck"]["entry"].startswith("shellcheck")
    assert "generate_image_contract.py --check" in hooks["image-contract-docs"]["entry"]

#!/usr/bin/env bash
# devdock's lint: ruff (check and format) over the Python, shellcheck over the shell scripts. scripts/test.sh runs it
# before the tests (and installs shellcheck); pre-commit runs the same tools on the files a commit changes.
#
#   scripts/lint.sh          lint everything
#   scripts/lint.sh --list   print the files each tool gets ("python FILE" / "shell FILE"), lint nothing
#
# Python: the package, tests, benchmarks, docs, examples, jupyterhub_config.py and images/ (the images' own Python,
# extensionless scripts included: found by their #! line, as pre-commit finds them). Shell: scripts/*.sh,
# tests/fresh/engine.sh and every shell script of images/ (*.sh, or a #! line naming sh or bash), followed into the
# files they source (-x).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

python_files=(devdock_spawner tests benchmarks docs examples jupyterhub_config.py images)
shell_files=(scripts/*.sh tests/fresh/engine.sh)
while IFS= read -r -d '' file; do
    case "$file" in
        *.py) continue ;; # ruff finds these in images/ by itself
        *.sh) shell_files+=("$file"); continue ;;
    esac
    first=$(head -n 1 "$file" | tr -d '\0')
    case "$first" in
        '#!'*python*) python_files+=("$file") ;;
        '#!/bin/sh'* | '#!/bin/bash'* | '#!/usr/bin/env sh'* | '#!/usr/bin/env bash'*) shell_files+=("$file") ;;
    esac
done < <(find images -name node_modules -prune -o -type f -print0 | sort -z)

if [ "${1:-}" = --list ]; then
    printf 'python %s\n' "${python_files[@]}"
    printf 'shell %s\n' "${shell_files[@]}"
    exit 0
fi

.venv/bin/ruff check "${python_files[@]}"
.venv/bin/ruff format --check "${python_files[@]}"
if ! command -v shellcheck >/dev/null; then
    echo "[lint] shellcheck is missing: apt-get install shellcheck (scripts/test.sh installs it)" >&2
    exit 1
fi
shellcheck -x "${shell_files[@]}"

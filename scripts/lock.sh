#!/usr/bin/env bash
# Re-resolve the hub image's Python dependencies and write them, pinned, to images/hub/requirements.lock.
#
#   scripts/lock.sh        (then rebuild: scripts/build-images.sh hub; review and commit the lock's diff)
#
# The hub image installs exactly the lock (the same versions on every build and every host); pyproject.toml keeps
# the lower bounds. tests/unit/test_dependency_floors.py checks that the lock meets them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(mktemp -d /tmp/devdock-lock.XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
    "$root/pyproject.toml" >"$venv/requirements.txt"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$venv/requirements.txt"
{
    echo "# The hub image's Python dependencies, pinned (scripts/lock.sh writes this file from pyproject.toml)."
    "$venv/bin/pip" freeze --disable-pip-version-check
} >"$root/images/hub/requirements.lock"
echo "wrote images/hub/requirements.lock ($(grep -vc '^#' "$root/images/hub/requirements.lock") packages)"

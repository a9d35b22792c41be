#!/usr/bin/env bash
# devdock's one test command: prepares everything a fresh Debian machine lacks, then runs every tier.
#
#   scripts/test.sh [pytest args...]
#
# 1. a Docker engine >= 25 with BuildKit and Compose v2 (installed and started if missing; scripts/engine.sh)
# 2. the local base image (pulled, or made with debootstrap when no registry answers) and devdock's
#    images, built with layer reuse (scripts/build-images.sh)
# 3. configurable-http-proxy (npm), Debian's Chromium and an OpenSSH client
# 4. a virtualenv (.venv) with devdock and its test extra
# 5. lint (ruff, the same hooks pre-commit runs), then pytest -v (modules side by side, pytest-xdist) over the unit, integration, e2e, compose
#    and swarm tiers (the swarm tier makes its own swarm on the engine and a second engine in a container).
# Nothing is skipped: a missing engine, image or browser fails the run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf '\n[test] %s\n' "$*" >&2; }
export PIP_DISABLE_PIP_VERSION_CHECK=1

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v caddy >/dev/null || need_apt+=(caddy)  # the TLS example's front end, in the integration tier
command -v ssh >/dev/null || need_apt+=(openssh-client)
command -v rsync >/dev/null || need_apt+=(rsync)  # rsync through the SSH gateway, as users run it
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! command -v configurable-http-proxy >/dev/null; then
    log "installing configurable-http-proxy"
    npm install -g --no-fund --no-audit configurable-http-proxy@5 >/dev/null
fi

log "Docker engine"
scripts/engine.sh

log "images"
time scripts/build-images.sh desktop hub proxy oidc swarm-node ssh-gateway

log "python environment"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import devdock_spawner" # fails loudly if the install did not work

log "lint"
.venv/bin/ruff check devdock_spawner tests benchmarks docs examples jupyterhub_config.py
.venv/bin/ruff format --check devdock_spawner tests benchmarks docs examples jupyterhub_config.py

log "pytest"
mkdir -p artifacts
set +e
# Modules run side by side on DEVDOCK_TEST_WORKERS workers (most of a test's time is spent waiting for
# containers, timeouts and browsers); each module stays whole on one worker (tests/conftest.py).
workers=${DEVDOCK_TEST_WORKERS:-3}
.venv/bin/python -m pytest -v -p no:cacheprovider -n "$workers" \
    --junitxml=artifacts/junit.xml "${@:-tests}"
status=$?
set -e
if [ $status -eq 5 ]; then
    log "pytest collected no tests: that is a failure"
    exit 1
fi
exit $status

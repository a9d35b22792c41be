#!/usr/bin/env bash
# devdock's one test command: prepares everything a fresh Debian machine lacks, then runs every tier.
#
#   scripts/test.sh [pytest args...]
#
# 1. a Docker engine >= 25 with BuildKit and Compose v2 (installed and started if missing; scripts/engine.sh)
# 2. the local base image (pulled, or made with debootstrap when no registry answers) and devdock's
#    images, built with layer reuse (scripts/build-images.sh)
# 3. configurable-http-proxy (npm, the version pinned below), Debian's Chromium, an OpenSSH client and the
#    other tools the tests run (Python's venv module, git, procps, rsync, util-linux, Caddy, gcc) and shellcheck
# 4. a virtualenv (.venv) with devdock and its test extra
# 5. lint (scripts/lint.sh: ruff and shellcheck, the same hooks pre-commit runs), then pytest -v (modules side by
#    side, pytest-xdist) over the unit, integration, e2e, compose, swarm and fresh tiers (the swarm tier makes its
#    own swarm on the engine and a second engine in a container; the fresh tier runs the README's scripts/up.sh and
#    docker compose from a clean clone of HEAD on a second dockerd of its own, tests/fresh/engine.sh, that holds only
#    what those commands built; tests/README.md).
# Nothing is skipped: a missing engine, image or browser fails the run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf '\n[test] %s\n' "$*" >&2; }
export PIP_DISABLE_PIP_VERSION_CHECK=1

# configurable-http-proxy: the newest release that runs on Debian 12's Node.js 18 (5.2 and later want Node 20, 5.3's
# dependencies Node 22.12); the same version as images/proxy/package.json (tests/unit/test_host_setup.py checks).
CHP_VERSION=5.1.0
need_apt=()
if ! command -v chromium >/dev/null; then
    # Ubuntu's chromium package is only a way to install the snap, which does not run in containers or CI: there,
    # install Chromium another way and point DEVDOCK_CHROMIUM at it (docs/deployment.md, supported hosts).
    # shellcheck source=/dev/null # the host's own file
    if [ "$(. /etc/os-release && echo "${ID:-}")" = ubuntu ] && [ ! -x "${DEVDOCK_CHROMIUM:-/usr/bin/chromium}" ]; then
        log "Ubuntu has no chromium .deb (only the snap): install Chromium and set DEVDOCK_CHROMIUM=/path/to/chromium"
        exit 1
    fi
    [ -x "${DEVDOCK_CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
fi
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)  # .venv below
command -v git >/dev/null || need_apt+=(git)                                   # the fresh-clone tests
command -v pgrep >/dev/null || need_apt+=(procps)
command -v caddy >/dev/null || need_apt+=(caddy)  # the TLS example's front end, in the integration tier
command -v ssh >/dev/null || need_apt+=(openssh-client)
command -v rsync >/dev/null || need_apt+=(rsync)  # rsync through the SSH gateway, as users run it
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v gcc >/dev/null || need_apt+=(gcc)  # a stand-in libcuda.so.1 for the GPU image's tests (no libc needed)
command -v npm >/dev/null || need_apt+=(nodejs npm)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)  # scripts/lint.sh
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)  # the accounting on PostgreSQL
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# One that is there and runs is kept; one that does not start on this Node.js (5.3 on Node 18) is replaced.
if ! configurable-http-proxy --version >/dev/null 2>&1; then
    log "installing configurable-http-proxy $CHP_VERSION"
    npm install -g --no-fund --no-audit "configurable-http-proxy@$CHP_VERSION" >/dev/null
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
scripts/lint.sh

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

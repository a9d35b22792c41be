#!/bin/sh
# Build steps of devdock's service images (hub, proxy, oidc), on top of images/build.sh.
#
#   service-steps.sh <step> [args...]
#
# build.sh holds the shared functions (extra CA certificates, apt mirror, apt_install, timezone) and its main()
# runs `step_<name>`: this script defines the service steps, then sources build.sh, whose main() dispatches to them.
# Settings arrive as build args, as for build.sh: APT_MIRROR, PIP_INDEX_URL, NPM_REGISTRY, TZ, EXTRA_CA_DIR.
set -eu

# OS packages of a service image, with the site's CAs trusted first. Usage: base <package>...
step_base() {
    ensure_apt_sources
    use_apt_mirror
    apt_install ca-certificates
    install_ca_certs
    apt_install tini "$@"
    set_timezone
}

# An unprivileged account for a service; the entrypoint drops to it. Usage: account <name> <uid>
step_account() {
    useradd --system --uid "$2" --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin "$1"
}

# A Node.js application from its package-lock.json, production dependencies only; npm is removed afterwards.
# Usage: node_app <dir>
step_node_app() {
    apt_install npm
    # npm runs on node, which trusts only its bundled CAs unless told otherwise.
    export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm_config_cafile=/etc/ssl/certs/ca-certificates.crt
    [ -z "${NPM_REGISTRY:-}" ] || export npm_config_registry="$NPM_REGISTRY"
    (cd "$1" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
    # npm drags in some 300 Debian packages; nothing needs them at run time.
    export DEBIAN_FRONTEND=noninteractive
    apt-get purge -y -qq npm >/dev/null
    apt-get autoremove -y -qq --purge >/dev/null
    rm -rf /root/.npm /root/.cache /var/lib/apt/lists/*
    node --version >/dev/null
}

pip_env() {
    [ -z "${PIP_INDEX_URL:-}" ] || export PIP_INDEX_URL
    # Debian's bundle includes the extra CAs installed above; pip's own certifi does not.
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
}

# The hub's venv with devdock's dependencies exactly as images/hub/requirements.lock pins them (scripts/lock.sh
# writes it from pyproject.toml): every build installs the same versions. This layer stays cached until the lock
# changes. Usage: python_deps <requirements.lock> <venv>
step_python_deps() {
    pip_env
    python3 -m venv "$2"
    "$2/bin/pip" install -q -r "$1"
}

# devdock itself, into the venv made by python_deps. Usage: python_app <source dir> <venv>
step_python_app() {
    pip_env
    "$2/bin/pip" install -q --no-deps "$1"
    "$2/bin/pip" check
    "$2/bin/python" -m compileall -q -j 0 "$2/lib" >/dev/null || true
}

# shellcheck source=images/build.sh # beside this script in the image (/opt/devdock/build)
. "$(dirname "$0")/build.sh"

#!/usr/bin/env bash
# Start devdock on this machine: the hub and its proxy on http://localhost:8000, user desktops as
# containers on the local Docker engine. Ctrl-C stops the hub; users' containers keep running and
# are found again on the next start.
#
#   scripts/up.sh
#
# Logins: any username with the password printed below (the dummy authenticator, for trying devdock
# out; docs/deployment.md shows SSO). The user "admin" is an admin. Settings: jupyterhub_config.py.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
data=${DEVDOCK_DATA_DIR:-$root/.devdock}
mkdir -p "$data"

# What a fresh Debian or Ubuntu lacks: Node.js and npm (configurable-http-proxy), Python's venv module.
need=()
command -v npm >/dev/null || need+=(nodejs npm)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "devdock: install ${need[*]} first (or run this as root on Debian/Ubuntu)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
scripts/engine.sh
# What the shipped defaults need: the desktop (users' servers), the SSH gateway, and the hub image, whose one-shot
# helper makes every new home a size-limited filesystem image (DEVDOCK_HOME_SIZE, 50G).
scripts/build-images.sh desktop ssh-gateway hub
# configurable-http-proxy 5.1.0: the newest release that runs on Debian 12's Node.js 18 (the same as
# images/proxy/package.json and scripts/test.sh). One that is there and starts is kept.
if ! configurable-http-proxy --version >/dev/null 2>&1; then
    npm install -g --no-fund --no-audit configurable-http-proxy@5.1.0 >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e . 2>&1 | grep -v "^WARNING: Location" || true

if [ -z "${DEVDOCK_DUMMY_PASSWORD:-}" ]; then
    [ -s "$data/password" ] || (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))' > "$data/password")
    DEVDOCK_DUMMY_PASSWORD=$(cat "$data/password")
fi
export DEVDOCK_DUMMY_PASSWORD DEVDOCK_DATA_DIR="$data"
export DEVDOCK_BIND_URL=${DEVDOCK_BIND_URL:-http://127.0.0.1:8000}

# SSH for everyone on one port: the gateway container (images/ssh-gateway), on this host's network like the hub;
# its host key stays in $data/ssh-gateway. DEVDOCK_SSH_MODE=ports: no gateway, a host port per server instead.
export DEVDOCK_SSH_MODE=${DEVDOCK_SSH_MODE:-gateway}
if [ "$DEVDOCK_SSH_MODE" != ports ]; then
    [ -s "$data/ssh-gateway-token" ] || (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_hex(32))' > "$data/ssh-gateway-token")
    export DEVDOCK_SSH_GATEWAY_TOKEN DEVDOCK_SSH_GATEWAY_PORT=${DEVDOCK_SSH_GATEWAY_PORT:-2222}
    DEVDOCK_SSH_GATEWAY_TOKEN=$(cat "$data/ssh-gateway-token")
    export DEVDOCK_SSH_GATEWAY_HOST_KEY="$data/ssh-gateway/ssh_host_ed25519_key.pub"
    mkdir -p "$data/ssh-gateway"
    if ! docker image inspect devdock/ssh-gateway:latest >/dev/null 2>&1; then
        echo "devdock: the image devdock/ssh-gateway:latest of the SSH gateway is not on this engine: run" \
            "scripts/build-images.sh ssh-gateway (or DEVDOCK_SSH_MODE=ports for no gateway)" >&2
        exit 1
    fi
    docker rm -f devdock-ssh-gateway >/dev/null 2>&1 || true
    docker run -d --name devdock-ssh-gateway --network host --restart unless-stopped --read-only \
        --tmpfs /tmp:size=16m --tmpfs /run/devdock-gateway:size=16m --cap-drop ALL --cap-add CHOWN --cap-add SETUID --cap-add SETGID \
        --cap-add FOWNER --cap-add DAC_OVERRIDE --security-opt no-new-privileges:true \
        -v "$data/ssh-gateway:/var/lib/devdock-gateway" \
        -e DEVDOCK_SSH_GATEWAY_HUB_API="${DEVDOCK_BIND_URL%/}/hub/api" -e DEVDOCK_SSH_GATEWAY_TOKEN \
        -e DEVDOCK_SSH_GATEWAY_PORT -e DEVDOCK_SSH_GATEWAY_BIND="${DEVDOCK_SSH_GATEWAY_BIND:-127.0.0.1}" \
        -e DEVDOCK_SSH_GATEWAY_LOOKUP_RATE -e DEVDOCK_SSH_GATEWAY_LOOKUP_BURST \
        devdock/ssh-gateway:latest >/dev/null
fi

cat <<MSG

  devdock is starting on ${DEVDOCK_PUBLIC_URL:-$(sed -E 's#//(127\.0\.0\.1|\[::1\])([:/]|$)#//localhost\2#' <<<"$DEVDOCK_BIND_URL")}
  (each user's server on its own origin: http://<name>.localhost:<port>, resolved by the browser itself)
  log in with any username and the password: ${DEVDOCK_DUMMY_PASSWORD}
  (the user "admin" sees the admin panel)
  SSH: through the gateway on port ${DEVDOCK_SSH_GATEWAY_PORT:-2222} (mode ${DEVDOCK_SSH_MODE}); /hub/ssh shows the ~/.ssh/config lines

MSG
exec .venv/bin/jupyterhub -f "$root/jupyterhub_config.py"

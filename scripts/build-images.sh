#!/usr/bin/env bash
# Build devdock's images from images/, reusing cached layers.
#
# Usage: scripts/build-images.sh [desktop|hub|proxy|oidc|swarm-node|ssh-gateway ...]   (default: desktop)
# The desktop image serves CPU and GPU servers alike (docs/gpu.md).
# Environment (all optional, forwarded as build args):
#   BASE_IMAGE, APT_MIRROR, PIP_INDEX_URL, NPM_REGISTRY, TZ
#   DEVDOCK_DESKTOP_IMAGE   tag for the desktop image (default devdock/desktop:latest)
#   DEVDOCK_HUB_IMAGE, DEVDOCK_PROXY_IMAGE, DEVDOCK_OIDC_IMAGE   tags of the compose stack's service images
#   DEVDOCK_HOST_CA_DIR     folder of extra CA certificates to trust (default /usr/local/share/ca-certificates)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '[build-images] %s\n' "$*" >&2; }

# The host's locally added CAs (a TLS-inspecting proxy) must be trusted inside the build too: its CA folder is the
# named build context "host-ca" (as docker-compose.yml passes it), nothing is copied into the checkout. A host
# without that folder gets an empty one.
host_ca_dir() {
    local src=${DEVDOCK_HOST_CA_DIR:-/usr/local/share/ca-certificates}
    if [ ! -d "$src" ]; then
        src=$(mktemp -d /tmp/devdock-no-host-ca.XXXXXX)
    fi
    printf '%s' "$src"
}

build() {
    local tag=$1 base=$2
    local args=(--build-arg "BASE_IMAGE=$base")
    for var in APT_MIRROR PIP_INDEX_URL TZ; do
        [ -n "${!var:-}" ] && args+=(--build-arg "$var=${!var}")
    done
    log "building $tag from $base"
    DOCKER_BUILDKIT=1 docker build -q "${args[@]}" --build-context "host-ca=$(host_ca_dir)" \
        -f "$root/images/desktop/Dockerfile" -t "$tag" "$root/images" >/dev/null
    log "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# The compose stack's services (docker-compose.yml builds the same Dockerfiles and shares these layers).
# The hub installs this repository's package, so its build context is the repository root.
build_service() {
    local name=$1 context=$2 tag_var="DEVDOCK_${1^^}_IMAGE"
    tag_var=${tag_var//-/_}
    local tag=${!tag_var:-devdock/$name:latest}
    local args=(--build-arg "BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}")
    for var in APT_MIRROR PIP_INDEX_URL NPM_REGISTRY TZ; do
        [ -n "${!var:-}" ] && args+=(--build-arg "$var=${!var}")
    done
    "$root/scripts/base-image.sh" "${BASE_IMAGE:-debian:bookworm-slim}"
    log "building $tag"
    DOCKER_BUILDKIT=1 docker build -q "${args[@]}" --build-context "host-ca=$(host_ca_dir)" \
        -f "$root/images/$name/Dockerfile" -t "$tag" "$context" >/dev/null
    log "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

main() {
    local targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=(desktop)
    for target in "${targets[@]}"; do
        case "$target" in
            desktop)
                local base=${BASE_IMAGE:-debian:bookworm-slim}
                "$root/scripts/base-image.sh" "$base"
                build "${DEVDOCK_DESKTOP_IMAGE:-devdock/desktop:latest}" "$base"
                ;;
            desktop-cuda)
                # Its Ubuntu base (nvidia/cuda) has no firefox-esr, and no CI built it: it is gone.
                log "there is no desktop-cuda image any more: devdock/desktop serves GPU servers too (docs/gpu.md)"
                exit 2
                ;;
            hub) build_service hub "$root" ;;
            proxy | oidc | swarm-node | ssh-gateway) build_service "$target" "$root/images" ;;
            *) log "unknown image '$target' (known: desktop, hub, proxy, oidc, swarm-node, ssh-gateway)"; exit 2 ;;
        esac
    done
}

main "$@"

#!/usr/bin/env bash
# Build devdock's images from images/, reusing cached layers.
#
# Usage: scripts/build-images.sh [desktop|desktop-cuda|hub ...]   (default: desktop)
# Environment (all optional, forwarded as build args):
#   BASE_IMAGE, APT_MIRROR, PIP_INDEX_URL, TZ
#   DEVDOCK_DESKTOP_IMAGE   tag for the desktop image (default devdock/desktop:latest)
#   DEVDOCK_HOST_CA_DIR     folder of extra CA certificates to trust (default /usr/local/share/ca-certificates)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '[build-images] %s\n' "$*" >&2; }

# The host's locally added CAs (a TLS-inspecting proxy) must be trusted inside the build too.
collect_ca_certs() {
    local src=${DEVDOCK_HOST_CA_DIR:-/usr/local/share/ca-certificates}
    [ -d "$src" ] || return 0
    find "$src" -name '*.crt' -type f -print0 | while IFS= read -r -d '' crt; do
        cmp -s "$crt" "$root/images/certs/$(basename "$crt")" || cp "$crt" "$root/images/certs/"
    done
}

build() {
    local tag=$1 base=$2
    local args=(--build-arg "BASE_IMAGE=$base")
    for var in APT_MIRROR PIP_INDEX_URL TZ; do
        [ -n "${!var:-}" ] && args+=(--build-arg "$var=${!var}")
    done
    log "building $tag from $base"
    # The classic builder works everywhere (BuildKit needs buildx, absent on some engines).
    DOCKER_BUILDKIT=0 docker build -q "${args[@]}" -f "$root/images/desktop/Dockerfile" -t "$tag" \
        "$root/images" >/dev/null
    log "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

main() {
    collect_ca_certs
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
                build "${DEVDOCK_DESKTOP_CUDA_IMAGE:-devdock/desktop-cuda:latest}" \
                    "${CUDA_BASE_IMAGE:-nvidia/cuda:12.4.1-runtime-ubuntu22.04}"
                ;;
            *) log "unknown image '$target' (known: desktop, desktop-cuda)"; exit 2 ;;
        esac
    done
}

main "$@"

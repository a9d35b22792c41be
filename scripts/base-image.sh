#!/usr/bin/env bash
# Make sure the base image the Dockerfiles start from exists locally.
#
# Usage: scripts/base-image.sh [IMAGE]   (default: debian:bookworm-slim)
#
# 1. Present already -> nothing to do.
# 2. `docker pull` works (a normal workstation) -> pull it.
# 3. No registry (air-gapped or closed CI machines): build an equivalent with debootstrap and
#    `docker import` it under the same name, so one Dockerfile serves both worlds.
set -euo pipefail

IMAGE=${1:-debian:bookworm-slim}
log() { printf '[base-image] %s\n' "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE present"
    exit 0
fi
if timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then
    log "pulled $IMAGE"
    exit 0
fi

case "$IMAGE" in
    debian:bookworm*) suite=bookworm ;;
    *) log "cannot pull $IMAGE and only know how to debootstrap debian:bookworm*"; exit 1 ;;
esac

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d /tmp/devdock-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
log "debootstrap $suite from $mirror (no registry reachable)"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >/dev/null
# Like the official slim image: no apt caches, no docs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$IMAGE" >/dev/null
log "imported $IMAGE from debootstrap"

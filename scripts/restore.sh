#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh: the hub's database, cookie secret and SSH keys, and the homes.
#
#   scripts/restore.sh BACKUP_DIR
#
# Stop the hub first (scripts/up.sh: Ctrl-C; compose: `docker compose stop hub`). Same variables as backup.sh
# (DEVDOCK_DATA_DIR or DEVDOCK_HUB_VOLUME). A home volume that exists already is left as it is (its name is
# printed): remove it first to restore it over. Users' servers that run keep running; the restored hub adopts
# or lists them (see docs/operations.md).
#
# A home that had a size limit (home_size) is made again as a filesystem image of the same size, by the same helper
# the hub runs (DEVDOCK_HUB_IMAGE), in DEVDOCK_HOME_IMAGES_DIR (default: the folder it was in). A backup made
# before the limit was recorded gets DEVDOCK_HOME_SIZE's limit (when set) instead of none. Sparse files come
# back sparse.
set -euo pipefail

backup=${1:?usage: scripts/restore.sh BACKUP_DIR}
backup=$(cd "$backup" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
image=${DEVDOCK_IMAGE:-devdock/desktop:latest}
helper=${DEVDOCK_HUB_IMAGE:-devdock/hub:latest}
log() { printf '[restore] %s\n' "$*" >&2; }

home_image() {  # home_image attach IMAGE SIZE LINK new | home_image release LINK
    local dir
    dir=$(dirname "$2")
    docker run --rm --network none --read-only --cap-drop ALL --cap-add MKNOD --security-opt no-new-privileges \
        --device /dev/loop-control --device-cgroup-rule 'b 7:* rwm' -v "$dir:$dir" \
        --entrypoint devdock-home-image "$helper" "$@" >/dev/null
}

# Bytes of DEVDOCK_HOME_SIZE ("50G"), as the hub reads it; 0 when it is empty or 0.
site_limit=0
case "${DEVDOCK_HOME_SIZE:-}" in
    "" | 0) ;;
    *) site_limit=$(docker run --rm --network none --entrypoint python3 "$helper" \
        -c 'import sys; from devdock_spawner.homeimage import parse_size; print(parse_size(sys.argv[1]))' \
        "$DEVDOCK_HOME_SIZE") ;;
esac

[ -s "$backup/hub/jupyterhub.sqlite" ] || { log "$backup/hub/jupyterhub.sqlite is missing: not a devdock backup"; exit 1; }

# --- the hub's data --------------------------------------------------------------------------------------------
if [ -n "${DEVDOCK_HUB_VOLUME:-}" ]; then
    log "hub data into volume $DEVDOCK_HUB_VOLUME"
    docker volume create "$DEVDOCK_HUB_VOLUME" >/dev/null
    docker run --rm --network none -v "$DEVDOCK_HUB_VOLUME:/data" -v "$backup/hub:/backup:ro" \
        --entrypoint sh "${DEVDOCK_HUB_IMAGE:-devdock/hub:latest}" -c 'cp -a /backup/. /data/'
else
    data=${DEVDOCK_DATA_DIR:-$root/.devdock}
    log "hub data into $data"
    mkdir -p "$data"
    cp -a "$backup/hub/." "$data/"
fi

# --- homes -----------------------------------------------------------------------------------------------------
while IFS=$'\t' read -r volume labels limit images; do
    [ -n "$volume" ] || continue
    if docker volume inspect "$volume" >/dev/null 2>&1; then
        log "home $volume exists: left as it is"
        continue
    fi
    [ -n "$limit" ] || limit=$site_limit  # a backup from before the limit was recorded
    [[ "$limit" =~ ^[0-9]+$ ]] || { log "home $volume: its limit '$limit' in volumes.tsv is not a number of bytes"; exit 1; }
    args=()
    while IFS= read -r pair; do
        args+=(--label "$pair")
    done < <(python3 -c 'import json,sys; [print(f"{k}={v}") for k, v in json.loads(sys.argv[1]).items()]' "$labels")
    link=""
    if [ "$limit" -gt 0 ]; then
        images=${DEVDOCK_HOME_IMAGES_DIR:-${images:-/var/lib/devdock/homes}}
        mkdir -p "$images" && chmod 700 "$images"
        link="$images/$volume.dev"
        [ ! -e "$images/$volume.img" ] || { log "home $volume: $images/$volume.img exists already: remove it first"; exit 1; }
        home_image attach "$images/$volume.img" "$limit" "$link" new
        # shellcheck disable=SC2054 # the commas separate mount options inside one word, not array elements
        args+=(--driver local --opt type=ext4 --opt "device=$link" --opt o=nosuid,nodev,noinit_itable,discard)
    fi
    docker volume create "${args[@]}" "$volume" >/dev/null
    docker run --rm --network none --cap-drop ALL --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER \
        --security-opt no-new-privileges -v "$volume:/home" -v "$backup/homes:/backup:ro" --entrypoint tar "$image" \
        -C /home --numeric-owner --same-owner -xzf "/backup/$volume.tar.gz"
    [ -z "$link" ] || home_image release "$link"
    log "home $volume${link:+ (limit $limit bytes)}"
done <"$backup/homes/volumes.tsv"
log "done"

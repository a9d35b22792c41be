#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh: the hub's database, cookie secret and SSH keys, and the homes.
#
#   scripts/restore.sh BACKUP_DIR
#
# Stop the hub first (scripts/up.sh: Ctrl-C; compose: `docker compose stop hub`). Same variables as backup.sh
# (DEVDOCK_DATA_DIR or DEVDOCK_HUB_VOLUME). A home volume that exists already is left as it is (its name is
# printed): remove it first to restore it over. Users' servers that run keep running; the restored hub adopts
# or lists them (see docs/operations.md).
set -euo pipefail

backup=${1:?usage: scripts/restore.sh BACKUP_DIR}
backup=$(cd "$backup" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
image=${DEVDOCK_IMAGE:-devdock/desktop:latest}
log() { printf '[restore] %s\n' "$*" >&2; }

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
while IFS=$'\t' read -r volume labels; do
    [ -n "$volume" ] || continue
    if docker volume inspect "$volume" >/dev/null 2>&1; then
        log "home $volume exists: left as it is"
        continue
    fi
    args=()
    while IFS= read -r pair; do
        args+=(--label "$pair")
    done < <(python3 -c 'import json,sys; [print(f"{k}={v}") for k, v in json.loads(sys.argv[1]).items()]' "$labels")
    docker volume create "${args[@]}" "$volume" >/dev/null
    docker run --rm --network none --cap-drop ALL --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER \
        --security-opt no-new-privileges -v "$volume:/home" -v "$backup/homes:/backup:ro" --entrypoint tar "$image" \
        -C /home --numeric-owner --same-owner -xzf "/backup/$volume.tar.gz"
    log "home $volume"
done <"$backup/homes/volumes.tsv"
log "done"

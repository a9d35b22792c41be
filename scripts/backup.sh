#!/usr/bin/env bash
# Back up a devdock hub while it runs: its database (an online, consistent copy), cookie secret and SSH keys, and
# every user's home volume (with its labels), into one folder.
#
#   scripts/backup.sh BACKUP_DIR
#
# Where the hub keeps its data (one of):
#   DEVDOCK_DATA_DIR=/path        a hub run by scripts/up.sh (default: .devdock in the checkout)
#   DEVDOCK_HUB_VOLUME=name       the compose stack's volume (devdock_hub-data)
# Which homes: those of hub DEVDOCK_HUB_ID (default devdock). Restore with scripts/restore.sh.
#
# The database copy uses SQLite's backup API, so it is consistent while the hub writes; homes are read through a
# read-only mount while their servers may run (a file being written at that moment may be caught half-way: stop
# servers first for a perfect copy of a home). Sparse files are archived as such (GNU tar --sparse finds their
# holes with SEEK_HOLE): a user's `truncate -s 15T ~/x` costs a few bytes, not days of reading zeros.
# homes/volumes.tsv lists each home: its volume, its labels, its size limit in bytes (0: a plain volume without
# one) and the folder of its filesystem image, so that restore.sh makes it again with the same limit.
set -euo pipefail

out=${1:?usage: scripts/backup.sh BACKUP_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
hub_id=${DEVDOCK_HUB_ID:-devdock}
image=${DEVDOCK_IMAGE:-devdock/desktop:latest}
helper=${DEVDOCK_HUB_IMAGE:-devdock/hub:latest}
log() { printf '[backup] %s\n' "$*" >&2; }

# A home with a size limit (an ext4 image, docs/sharing.md) is mountable only while its image is on a loop device:
# the same helper the hub runs attaches it (a running server's stays as it is) and lets it go afterwards.
home_image() {  # home_image attach|release VOLUME DEVICE_LINK: the helper's JSON answer on stdout
    local dir
    dir=$(dirname "$3")
    local args=(release "$3")
    [ "$1" = attach ] && args=(attach "$dir/$2.img" 0 "$3")
    docker run --rm --network none --read-only --cap-drop ALL --cap-add MKNOD --security-opt no-new-privileges \
        --device /dev/loop-control --device-cgroup-rule 'b 7:* rwm' -v "$dir:$dir" \
        --entrypoint devdock-home-image "$helper" "${args[@]}" | tail -n 1
}

mkdir -p "$out/homes"
out=$(cd "$out" && pwd)
chmod 700 "$out"

# --- the hub's data --------------------------------------------------------------------------------------------
copy_data='
import os, shutil, sqlite3, sys
src, dst = sys.argv[1], sys.argv[2]
# The hub database, and the accounting one (devdock_spawner/accounting.py) when it is SQLite beside it: copied with
# the online backup of SQLite, consistent while the hub writes.
for name in ("jupyterhub.sqlite", "devdock-accounting.sqlite"):
    if name == "jupyterhub.sqlite" or os.path.exists(os.path.join(src, name)):
        with sqlite3.connect(os.path.join(src, name)) as db, sqlite3.connect(os.path.join(dst, name)) as copy:
            db.backup(copy)
for name in ("jupyterhub_cookie_secret",):
    if os.path.exists(os.path.join(src, name)):
        shutil.copy2(os.path.join(src, name), dst)
if os.path.isdir(os.path.join(src, "ssh-keys")):
    shutil.copytree(os.path.join(src, "ssh-keys"), os.path.join(dst, "ssh-keys"), dirs_exist_ok=True)
'
mkdir -p "$out/hub"
if [ -n "${DEVDOCK_HUB_VOLUME:-}" ]; then
    log "hub data from volume $DEVDOCK_HUB_VOLUME"
    docker run --rm --network none -v "$DEVDOCK_HUB_VOLUME:/data:ro" -v "$out/hub:/backup" \
        --entrypoint python3 "${DEVDOCK_HUB_IMAGE:-devdock/hub:latest}" -c "$copy_data" /data /backup
else
    data=${DEVDOCK_DATA_DIR:-$root/.devdock}
    log "hub data from $data"
    python3 -c "$copy_data" "$data" "$out/hub"
fi

# --- homes -----------------------------------------------------------------------------------------------------
: >"$out/homes/volumes.tsv"
docker volume ls -q --filter "label=io.devdock.hub=$hub_id" --filter label=io.devdock.owner | while read -r volume; do
    labels=$(docker volume inspect -f '{{json .Labels}}' "$volume")
    device=$(docker volume inspect -f '{{index .Options "device"}}' "$volume")
    [ "$device" = "$(dirname "$device")/$volume.dev" ] || device=""
    limit=0
    if [ -n "$device" ]; then
        limit=$(home_image attach "$volume" "$device" | python3 -c 'import json, sys; print(json.load(sys.stdin)["size"])')
    fi
    docker run --rm --network none --cap-drop ALL --cap-add DAC_READ_SEARCH --security-opt no-new-privileges \
        -v "$volume:/home:ro" -v "$out/homes:/backup" --entrypoint tar "$image" \
        -C /home --numeric-owner --sparse -czf "/backup/$volume.tar.gz" .
    [ -z "$device" ] || home_image release "$volume" "$device" >/dev/null
    printf '%s\t%s\t%s\t%s\n' "$volume" "$labels" "$limit" "${device:+$(dirname "$device")}" >>"$out/homes/volumes.tsv"
    log "home $volume${device:+ (limit $limit bytes)}"
done
log "done: $(wc -l <"$out/homes/volumes.tsv") homes and the hub's database in $out"

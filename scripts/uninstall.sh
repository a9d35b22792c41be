#!/usr/bin/env bash
# Remove what devdock put on this host, keeping users' homes unless asked.
#
#   scripts/uninstall.sh                 users' containers, the users network, the SSH gateway container, the
#                                        systemd unit, the CDI switch engine.sh added to daemon.json, and
#                                        /var/lib/devdock except the homes' images
#   scripts/uninstall.sh --remove-homes  the same, and every home of this hub (volumes and their images): gone for good
#
# Stop the hub first (scripts/up.sh: Ctrl-C or `systemctl stop devdock`; compose: `docker compose down`, and
# `docker compose down -v` for its own volumes: database, secrets). Left alone: the Docker engine itself, the images
# (`docker image rm devdock/desktop ...`), the checkout and its .devdock data folder (the hub's database), and
# anything of another hub on the same engine (its containers and homes carry another io.devdock.hub label).
#
# Which hub and where (the same variables as the hub; defaults as shipped):
#   DEVDOCK_HUB_ID (devdock)  DEVDOCK_NETWORK (devdock)  DEVDOCK_SSH_GATEWAY_NAME (devdock-ssh-gateway)
#   DEVDOCK_STATE_DIR (/var/lib/devdock)  DEVDOCK_HOME_IMAGES_DIR (/var/lib/devdock/homes)
#   DEVDOCK_DAEMON_JSON (/etc/docker/daemon.json)  DEVDOCK_SYSTEMD_UNIT (/etc/systemd/system/devdock.service)
set -euo pipefail

remove_homes=0
for arg in "$@"; do
    case "$arg" in
        --remove-homes) remove_homes=1 ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "uninstall.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

hub_id=${DEVDOCK_HUB_ID:-devdock}
network=${DEVDOCK_NETWORK:-devdock}
gateway=${DEVDOCK_SSH_GATEWAY_NAME:-devdock-ssh-gateway}
state=${DEVDOCK_STATE_DIR:-/var/lib/devdock}
homes=${DEVDOCK_HOME_IMAGES_DIR:-$state/homes}
daemon_json=${DEVDOCK_DAEMON_JSON:-/etc/docker/daemon.json}
unit=${DEVDOCK_SYSTEMD_UNIT:-/etc/systemd/system/devdock.service}
log() { printf '[uninstall] %s\n' "$*" >&2; }

# --- the service unit ------------------------------------------------------------------------------------------
if [ -f "$unit" ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now "$(basename "$unit")" >/dev/null 2>&1 || true
    fi
    rm -f "$unit"
    [ ! -d /run/systemd/system ] || systemctl daemon-reload
    log "removed the service unit $unit"
fi

# --- containers and the network --------------------------------------------------------------------------------
mapfile -t containers < <(docker ps -aq --filter "label=io.devdock.hub=$hub_id" --filter label=io.devdock.managed=true)
if [ ${#containers[@]} -gt 0 ]; then
    docker rm -f "${containers[@]}" >/dev/null
    log "removed ${#containers[@]} users' containers of hub $hub_id"
fi
if docker container inspect "$gateway" >/dev/null 2>&1; then
    docker rm -f "$gateway" >/dev/null
    log "removed the SSH gateway container $gateway"
fi
if docker network inspect "$network" >/dev/null 2>&1; then
    # Only a network with nothing of anybody else's attached: another hub or tool may share the name.
    attached=$(docker network inspect -f '{{len .Containers}}' "$network")
    if [ "$attached" = 0 ]; then
        docker network rm "$network" >/dev/null
        log "removed the users network $network"
    else
        log "kept the network $network: $attached containers that are not this hub's are attached to it"
    fi
fi

# --- homes -----------------------------------------------------------------------------------------------------
mapfile -t volumes < <(docker volume ls -q --filter "label=io.devdock.hub=$hub_id" --filter label=io.devdock.owner)
if [ "$remove_homes" = 1 ]; then
    [ ${#volumes[@]} -eq 0 ] || docker volume rm "${volumes[@]}" >/dev/null
    rm -rf "$homes"
    log "removed ${#volumes[@]} homes of hub $hub_id and the home images in $homes"
else
    log "kept ${#volumes[@]} homes of hub $hub_id (volumes) and $homes; --remove-homes removes them"
fi

# --- /var/lib/devdock, all but the homes' images ----------------------------------------------------------------
if [ -d "$state" ]; then
    find "$state" -mindepth 1 -maxdepth 1 ! -path "$homes" -exec rm -rf {} +
    rmdir "$state" 2>/dev/null || true
    log "removed $state$([ -d "$homes" ] && echo " (but the homes in $homes)")"
fi

# --- the CDI switch engine.sh added ----------------------------------------------------------------------------
# engine.sh leaves a note when it is the one that switched CDI on; without that note daemon.json is the admin's.
marker="$(dirname "$daemon_json")/.devdock-cdi"
if [ -f "$marker" ] && [ -f "$daemon_json" ]; then
    python3 - "$daemon_json" <<'PY'
import json, pathlib, sys
path = pathlib.Path(sys.argv[1])
config = json.loads(path.read_text() or "{}")
config.get("features", {}).pop("cdi", None)
if not config.get("features", True):
    config.pop("features")
path.write_text(json.dumps(config, indent=2) + "\n")
PY
    rm -f "$marker"
    log "removed the CDI switch from $daemon_json: it applies at the engine's next restart (systemctl restart docker)"
fi
log "done"

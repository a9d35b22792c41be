#!/usr/bin/env bash
# Make sure a current Docker engine (>= 25, with BuildKit and Compose v2) answers on this machine.
#
# - If `docker info` already works (a workstation with Docker CE or Docker Desktop, or a dockerd started
#   earlier), use it unchanged and say which version it is; an engine older than 25 gets a warning.
# - Else, as root on Debian/Ubuntu, install a current engine when dockerd is missing or older than 25:
#   the distribution's own docker.io when it is new enough (Debian 13, Ubuntu 24.04), otherwise Debian
#   trixie's docker.io, docker-buildx and docker-compose (Compose v2) packages, fetched through a source
#   list of their own (the system's apt sources are not touched) and installed over bookworm. Their
#   dependencies (libc6 >= 2.34, containerd, runc, iptables, tini) are met by bookworm itself.
# - Start dockerd with CDI enabled and wait until it answers: through systemd where systemd runs and knows
#   docker.service (so that the engine comes back after a reboot), else in the background. An engine that already
#   runs is never restarted (that would stop users' containers): without CDI it gets a warning with what to do.
# Fails loudly (exit 1) when no engine can be had: the test suite never turns a missing engine into a pass.
#
# Environment: DEVDOCK_DOCKERD_LOG (dockerd's log file), DEVDOCK_ENGINE_SUITE (Debian suite the engine
# packages come from, default trixie), DEBIAN_MIRROR.
set -euo pipefail

MIN_ENGINE_MAJOR=25
SUITE=${DEVDOCK_ENGINE_SUITE:-trixie}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Where the engine packages are fetched to; kept between runs so that a warm machine downloads nothing.
CACHE=/var/cache/devdock-engine

log() { printf '[engine] %s\n' "$*" >&2; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

major() { sed -E 's/^([0-9]+).*/\1/' <<<"$1"; }

dockerd_version() { dockerd --version 2>/dev/null | sed -E 's/^Docker version ([0-9.]+).*/\1/'; }

need_root_apt() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        log "no Docker engine >= $MIN_ENGINE_MAJOR and cannot install one (need root on Debian/Ubuntu)"
        log "install Docker Engine (https://docs.docker.com/engine/install/) and retry"
        exit 1
    fi
}

# apt with a private source list: only $SUITE's packages are visible, nothing is added to the system.
suite_apt() {
    apt-get -q -o Dir::Etc::sourcelist="$CACHE/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$CACHE/lists" -o APT::Get::List-Cleanup=0 "$@"
}

fetch_suite_packages() {
    mkdir -p "$CACHE/lists/partial" "$CACHE/debs"
    # Ubuntu has no Debian archive keyring by default (its universe packages it).
    if [ ! -s /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debian-archive-keyring >/dev/null
    fi
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" \
        >"$CACHE/sources.list"
    suite_apt update >/dev/null
    (cd "$CACHE/debs" && rm -f ./*.deb && suite_apt download docker.io docker-buildx docker-compose \
        >/dev/null 2>&1)
}

install_engine() {
    need_root_apt
    apt-get update -qq
    local candidate
    candidate=$(apt-cache policy docker.io 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && \
        [ "$(major "${candidate#*:}")" -ge "$MIN_ENGINE_MAJOR" ]; then
        log "installing the distribution's docker.io $candidate"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker.io docker-buildx docker-compose-v2 ca-certificates >/dev/null 2>&1 ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                docker.io docker-buildx docker-compose ca-certificates >/dev/null
        return
    fi
    log "installing Debian $SUITE's docker.io, docker-buildx and docker-compose (Compose v2)"
    fetch_suite_packages
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "$CACHE"/debs/*.deb ca-certificates >/dev/null
}

# CDI lets `--device vendor.com/class=name` inject the devices a spec in /etc/cdi describes; on by
# default from Engine 28, behind a feature flag before. Keep any other setting the file already has.
enable_cdi() {
    mkdir -p /etc/docker /etc/cdi
    python3 - <<'PY'
import json, pathlib
path = pathlib.Path("/etc/docker/daemon.json")
config = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
if config.get("features", {}).get("cdi") is not True:
    config.setdefault("features", {})["cdi"] = True
    path.write_text(json.dumps(config, indent=2) + "\n")
    # A note that devdock switched it on: scripts/uninstall.sh takes back only what devdock changed.
    (path.parent / ".devdock-cdi").write_text("scripts/engine.sh set features.cdi in daemon.json\n")
PY
}

systemd_runs_docker() {
    [ -d /run/systemd/system ] && systemctl cat docker.service >/dev/null 2>&1
}

start_engine() {
    local logfile=${DEVDOCK_DOCKERD_LOG:-/var/log/devdock-dockerd.log}
    enable_cdi
    if systemd_runs_docker; then
        log "starting docker.service through systemd (enabled: it starts again after a reboot)"
        systemctl enable --now docker.service >/dev/null 2>&1 || systemctl restart docker.service
    else
        log "starting dockerd (log: $logfile)"
        # setsid: the daemon outlives this script (and the test session that started it).
        setsid dockerd >"$logfile" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 60); do
        engine_answers && return 0
        sleep 1
    done
    log "dockerd did not answer within 60 s; its log follows"
    tail -n 50 "$logfile" >&2 || true
    exit 1
}

report() {
    local version
    version=$(docker version --format '{{.Server.Version}}')
    log "engine ready: Docker $version (API $(docker version --format '{{.Server.APIVersion}}'))"
    if [ "$(major "$version")" -lt "$MIN_ENGINE_MAJOR" ]; then
        log "WARNING: Docker $version is older than $MIN_ENGINE_MAJOR (end of life); devdock is tested on 26-28"
    fi
    # CDI (docs/gpu.md): Engine 28 has it by default; before, a running engine that lacks it is not restarted here.
    if [ "$(docker info --format '{{len .CDISpecDirs}}' 2>/dev/null || echo 0)" = 0 ]; then
        log "WARNING: CDI is off on this engine: GPUs named as CDI devices cannot be given to servers. To switch it"
        log "  on: add {\"features\": {\"cdi\": true}} to /etc/docker/daemon.json, then 'systemctl restart docker'"
        log "  (running containers stop unless daemon.json has \"live-restore\": true; devdock's come back on start)"
    fi
    if docker compose version >/dev/null 2>&1; then
        log "compose: $(docker compose version --short)"
    else
        log "WARNING: no Compose v2 (docker compose); install the docker-compose-plugin package"
    fi
}

main() {
    if engine_answers; then
        log "engine already running"
        report
        return 0
    fi
    local installed
    installed=$(dockerd_version || true)
    if [ -z "$installed" ] || [ "$(major "$installed")" -lt "$MIN_ENGINE_MAJOR" ]; then
        install_engine
    fi
    start_engine
    report
}

main "$@"

#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine.
#
# - If `docker info` already works (a workstation with Docker Desktop or a running dockerd), do nothing.
# - Else, if dockerd is missing and we are root on Debian/Ubuntu, install Debian's engine (docker.io).
# - Start dockerd in the background and wait until it answers.
# Fails loudly (exit 1) when no engine can be had: the test suite never turns a missing engine into a pass.
set -euo pipefail

log() { printf '[engine] %s\n' "$*" >&2; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

install_engine() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        log "no Docker engine and cannot install one (need root on Debian/Ubuntu); install Docker and retry"
        exit 1
    fi
    log "installing Debian's docker.io engine"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io containerd runc iptables ca-certificates >/dev/null
}

start_engine() {
    local logfile=${DEVDOCK_DOCKERD_LOG:-/var/log/devdock-dockerd.log}
    log "starting dockerd (log: $logfile)"
    # setsid: the daemon outlives this script (and the test session that started it).
    setsid dockerd >"$logfile" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
        engine_answers && return 0
        sleep 1
    done
    log "dockerd did not answer within 60 s; its log follows"
    tail -n 50 "$logfile" >&2 || true
    exit 1
}

main() {
    if engine_answers; then
        log "engine already running"
        return 0
    fi
    command -v dockerd >/dev/null || install_engine
    start_engine
    log "engine ready: $(docker version --format '{{.Server.Version}}')"
}

main "$@"

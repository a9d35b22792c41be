#!/usr/bin/env bash
# The fresh tier's own Docker engine: a second dockerd on this host, beside the main one, that holds only what the
# README's commands built into it (tests/README.md, "fresh").
#
#   tests/fresh/engine.sh start     start it (or find it running) and wait until it answers
#   tests/fresh/engine.sh stop      stop it (its containers stop with it; images and build cache stay)
#   tests/fresh/engine.sh host      print its DOCKER_HOST
#
# Everything of its own: data root (kept between runs, so that a warm machine rebuilds nothing: only `scripts/up.sh`
# and `docker compose` ever build into it), socket, exec root, pid file, containerd namespaces and configuration file
# (the main engine's /etc/docker/daemon.json is neither read nor changed). Docker's own firewall rules are the main
# engine's alone (--iptables=false, --ip6tables=false: two engines would fight over the DOCKER chains, each removing
# the other's at start). Its default bridge is a bridge of its own ($bridge, $bridge_net; docker0 is the main
# engine's), which image builds need (BuildKit's RUN steps use it): this script gives it the two rules Docker would
# have added, outside Docker's chains (masquerading in POSTROUTING, forwarding in FORWARD), so that apt and pip reach
# the package registries during builds, and removes them and the bridge on stop. Users' networks come from an address
# pool the main engine does not use ($pool), so routes on this host never overlap; they get no masquerading (the
# journey needs none). Published ports work through docker-proxy; containers reach the host and the host reaches them,
# which is all devdock needs (inter-container isolation is the main engine's to prove: test_isolation.py).
#
# Environment: DEVDOCK_FRESH_DATA_ROOT (/var/lib/devdock-fresh/docker), DEVDOCK_FRESH_RUN (/run/devdock-fresh),
# DEVDOCK_FRESH_POOL (10.213.0.0/16), DEVDOCK_FRESH_BRIDGE_NET (10.214.0.1/24), DEVDOCK_FRESH_LOG
# (/var/log/devdock-fresh-dockerd.log).
set -euo pipefail

data_root=${DEVDOCK_FRESH_DATA_ROOT:-/var/lib/devdock-fresh/docker}
run=${DEVDOCK_FRESH_RUN:-/run/devdock-fresh}
pool=${DEVDOCK_FRESH_POOL:-10.213.0.0/16}
bridge=devdock-fresh0
bridge_net=${DEVDOCK_FRESH_BRIDGE_NET:-10.214.0.1/24}
logfile=${DEVDOCK_FRESH_LOG:-/var/log/devdock-fresh-dockerd.log}
host="unix://$run/docker.sock"

log() { printf '[fresh-engine] %s\n' "$*" >&2; }
answers() { DOCKER_HOST=$host timeout 10 docker info >/dev/null 2>&1; }

# The default bridge's rules: "rules -A" adds each one that is missing, "rules -D" removes each one there.
rules() {
    local op=$1 subnet
    subnet=$(python3 -c "import ipaddress, sys; print(ipaddress.ip_interface(sys.argv[1]).network)" "$bridge_net")
    rule "$op" nat POSTROUTING -s "$subnet" ! -o "$bridge" -j MASQUERADE
    rule "$op" filter FORWARD -i "$bridge" ! -o "$bridge" -j ACCEPT
    rule "$op" filter FORWARD -o "$bridge" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
}

rule() {
    local op=$1 table=$2 chain=$3
    shift 3
    if iptables -t "$table" -C "$chain" "$@" 2>/dev/null; then
        [ "$op" != -D ] || iptables -t "$table" -D "$chain" "$@"
    else
        [ "$op" != -A ] || iptables -t "$table" -A "$chain" "$@"
    fi
}

start() {
    if answers; then
        log "already running ($host)"
        return 0
    fi
    command -v dockerd >/dev/null || { log "no dockerd on this host: run scripts/engine.sh first"; exit 1; }
    mkdir -p "$data_root" "$run/exec"
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        ip link add "$bridge" type bridge
        ip addr add "$bridge_net" dev "$bridge"
    fi
    ip link set "$bridge" up
    rules -A
    # CDI as scripts/engine.sh enables it for the main engine; nothing else. --live-restore: a dockerd with its own
    # --default-address-pool that finds its stale "bridge" network at start deletes the link named docker0 -- the main
    # engine's default bridge, on this same host (moby's initNetworkController), unless live restore is on; every
    # build and default-bridge container of the main engine then failed ("docker0: Device does not exist").
    printf '{\n  "features": {"cdi": true}\n}\n' >"$run/daemon.json"
    log "starting dockerd on $host (data root $data_root, log $logfile)"
    setsid dockerd \
        --config-file "$run/daemon.json" \
        --data-root "$data_root" \
        --exec-root "$run/exec" \
        --pidfile "$run/docker.pid" \
        --host "$host" \
        --containerd-namespace devdock-fresh \
        --containerd-plugins-namespace devdock-fresh-plugins \
        --bridge "$bridge" \
        --iptables=false \
        --ip6tables=false \
        --default-address-pool "base=$pool,size=24" \
        --live-restore \
        >"$logfile" 2>&1 </dev/null &
    for _ in $(seq 1 90); do
        answers && { log "ready: Docker $(DOCKER_HOST=$host docker version --format '{{.Server.Version}}')"; return 0; }
        sleep 1
    done
    log "dockerd did not answer within 90 s; its log follows"
    tail -n 40 "$logfile" >&2 || true
    exit 1
}

stop() {
    local pid
    pid=$(cat "$run/docker.pid" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        log "not running"
        forget_bridge
        return 0
    fi
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || { forget_bridge; log "stopped"; return 0; }
        sleep 1
    done
    log "dockerd (pid $pid) did not stop within 60 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    forget_bridge
}

# The default bridge's rules and the bridge itself, once the engine is gone (start makes both again).
forget_bridge() {
    rules -D
    ! ip link show "$bridge" >/dev/null 2>&1 || ip link delete "$bridge"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    host) echo "$host" ;;
    *) echo "usage: $0 start|stop|host" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Switches a running OpenChoreo k3d cluster over to the eBPF host ingress, and back.
# The same steps as docs/k3d.md, with the checks after each; run as root on the VM,
# with the admin kubeconfig k3d wrote (KUBECONFIG or ~/.kube/config) and the agent
# installed but not started (`cargo xtask install --no-start`).
#
#   takeover.sh over [--interface IFACE]   serverlb and kgateway out, the agent in
#   takeover.sh back                       the agent out, serverlb and kgateway back
#   takeover.sh status                     who holds which port, what kgateway runs
#
# Environment: CLUSTER (default openchoreo); INGRESS, the agent binary (default: the
# one the installed ebpf-ingress.service starts, so `cargo xtask install --prefix DIR`
# works too). State (kgateway's replica counts, the interface) is kept in
# /etc/ebpf-ingress/k3d-takeover.state for `back`.
set -euo pipefail

cluster=${CLUSTER:-openchoreo}
node="k3d-$cluster-server-0"
lb="k3d-$cluster-serverlb"
etc=/etc/ebpf-ingress
state="$etc/k3d-takeover.state"
here=$(cd "$(dirname "$0")" && pwd)
cp_ns=openchoreo-control-plane
dp_ns=openchoreo-data-plane

say() { printf '\n== %s\n' "$*"; }
die() { echo "takeover.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is not installed"; }

# The agent binary: $INGRESS, else the ExecStart of the installed unit (install writes
# it for its --prefix), else /usr/local/bin/ingress (the default prefix).
agent_bin() {
    if [ -n "${INGRESS:-}" ]; then echo "$INGRESS"; return; fi
    local exec
    exec=$(systemctl cat ebpf-ingress.service 2>/dev/null | awk '/^ExecStart=/ {sub(/^ExecStart=[-+!@:]*/, ""); print $1; exit}')
    echo "${exec:-/usr/local/bin/ingress}"
}

# The kgateway controller: the Deployments of the control-plane namespace running a
# kgateway image (the chart names them after its release; the Envoy proxies run
# envoy images and are named after their Gateway, gateway-default).
kgateway_controllers() {
    kubectl -n "$cp_ns" get deploy -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.template.spec.containers[*].image}{"\n"}{end}' |
        awk '$0 ~ /kgateway-dev\/kgateway:|\/kgateway:/ {print $1}'
}

replicas() { kubectl -n "$1" get deploy "$2" -o jsonpath='{.spec.replicas}'; }

wait_http() { # PORT HOST: the status code of GET / through PORT with Host HOST
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $2" "http://127.0.0.1:$1/" || true
}

status() {
    say "listening sockets on the agent's ports (ss -ltnp)"
    ss -ltnp | awk 'NR==1 || /:(8080|9080|6550|10081|10082|11080|11081|11082) /' || true
    say "containers"
    docker ps -a --filter "name=k3d-$cluster" --format '{{.Names}}\t{{.Status}}\t{{.Ports}}'
    say "kgateway (replicas)"
    for d in $(kgateway_controllers); do echo "$cp_ns/$d $(replicas "$cp_ns" "$d")"; done
    for ns in "$cp_ns" "$dp_ns"; do echo "$ns/gateway-default $(replicas "$ns" gateway-default 2>/dev/null || echo absent)"; done
    say "ebpf-ingress"
    systemctl is-active ebpf-ingress || true
}

over() {
    local iface=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --interface) iface=${2:?--interface needs a value}; shift 2 ;;
            *) die "unknown argument $1" ;;
        esac
    done
    [ "$(id -u)" = 0 ] || die "run as root (it stops containers and starts the service)"
    need docker; need kubectl; need curl; need ss
    systemctl cat ebpf-ingress.service >/dev/null 2>&1 || die "ebpf-ingress.service is not installed (cargo xtask install --no-start)"
    local bin
    bin=$(agent_bin)
    [ -x "$bin" ] || die "$bin missing: run cargo xtask install --no-start first (or set INGRESS)"
    [ -n "$iface" ] || iface=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
    [ -n "$iface" ] || die "no default route: pass --interface IFACE (the NIC clients reach the VM on)"
    [ -e "$state" ] && die "$state exists: the cluster is already switched over (takeover.sh back first)"
    docker inspect "$lb" >/dev/null 2>&1 || die "no container $lb (CLUSTER=$cluster): nothing to take over"
    local registry=no
    if docker inspect "$lb" --format '{{json .HostConfig.PortBindings}}' | grep -q '"HostPort":"10082"'; then
        registry=yes
        need socat
    fi

    say "1. the node's address (kubectl get node $node)"
    local ip
    ip=$(kubectl get node "$node" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
    [ -n "$ip" ] || die "Node $node has no InternalIP"
    echo "$node = $ip"

    say "2. the agent's identity: rbac.yaml and a kubeconfig to https://$ip:6443"
    NODE="$node" "$here/agent-kubeconfig.sh" "$etc/kubeconfig"
    KUBECONFIG="$etc/kubeconfig" kubectl get httproutes -A --no-headers | wc -l | xargs echo "HTTPRoutes the agent can see:"

    say "3. the agent's config ($etc/config.toml; the one before kept as config.toml.before-k3d)"
    [ -f "$etc/config.toml" ] && cp -p "$etc/config.toml" "$etc/config.toml.before-k3d"
    sed -e "s/@INTERFACE@/$iface/g" -e "s/@NODE_IP@/$ip/g" "$here/config.toml.in" > "$etc/config.toml.new"
    mv "$etc/config.toml.new" "$etc/config.toml"
    "$bin" check --config "$etc/config.toml"

    say "4. kgateway's controller to zero replicas (the Envoy proxies still serve through the serverlb)"
    local controllers
    controllers=$(kgateway_controllers)
    [ -n "$controllers" ] || echo "no kgateway controller Deployment found in $cp_ns (nothing to scale)"
    : > "$state.new"
    echo "interface=$iface" >> "$state.new"
    for d in $controllers; do
        echo "controller $cp_ns $d $(replicas "$cp_ns" "$d")" >> "$state.new"
        kubectl -n "$cp_ns" scale deploy "$d" --replicas=0
    done
    for ns in "$cp_ns" "$dp_ns"; do
        if kubectl -n "$ns" get deploy gateway-default >/dev/null 2>&1; then
            echo "proxy $ns gateway-default $(replicas "$ns" gateway-default)" >> "$state.new"
        fi
    done
    mv "$state.new" "$state"

    say "5. the serverlb stopped (docker stop $lb): 8080, 9080, 6550, ... free"
    docker stop "$lb" >/dev/null
    if [ "$registry" = yes ]; then
        echo "the serverlb published 10082 (the registry): forwarding it with k3d-registry-port.service"
        echo "NODE_IP=$ip" > "$etc/k3d-registry-port.env"
        install -m 0644 "$here/k3d-registry-port.service" /etc/systemd/system/k3d-registry-port.service
        systemctl daemon-reload
        systemctl enable --now k3d-registry-port.service
    fi

    say "6. the agent started (systemctl enable --now ebpf-ingress)"
    systemctl enable --now ebpf-ingress.service
    for _ in $(seq 1 30); do
        [ "$(systemctl is-active ebpf-ingress)" = active ] && break
        sleep 1
    done
    systemctl is-active ebpf-ingress >/dev/null || die "ebpf-ingress did not become active: journalctl -u ebpf-ingress"

    say "7. kgateway's Envoy proxies to zero replicas"
    for ns in "$cp_ns" "$dp_ns"; do
        kubectl -n "$ns" scale deploy gateway-default --replicas=0 2>/dev/null || true
    done

    say "8. checks"
    check
}

# The hostnames of the HTTPRoutes: the control plane's (port 8080) and every other
# namespace's (the data plane's, port 9080), one "PORT HOST" line each.
route_hosts() {
    kubectl get httproutes -A -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.spec.hostnames[*]}{"\n"}{end}' |
        awk -v cp="$cp_ns" '{for (i = 2; i <= NF; i++) print ($1 == cp ? 8080 : 9080), $i}' | sort -u
}

check() {
    ss -ltnp | awk 'NR==1 || /:(8080|9080) /'
    local bad=0 code
    while read -r port host; do
        code=$(wait_http "$port" "$host")
        printf '%s %-50s %s\n' "$port" "$host" "$code"
        case "$code" in 000 | 502 | 503 | 504) bad=1 ;; esac
    done < <(route_hosts)
    kubectl --server https://127.0.0.1:6550 get nodes || bad=1
    "$(agent_bin)" routes >/dev/null || bad=1
    [ "$bad" = 0 ] || die "a check failed (above)"
}

back() {
    [ "$(id -u)" = 0 ] || die "run as root"
    [ -f "$state" ] || die "$state missing: nothing to switch back (or it was switched by hand: see docs/k3d.md)"
    local iface
    iface=$(awk -F= '/^interface=/ {print $2}' "$state")

    say "1. the agent stopped and everything it attached removed (ingress detach)"
    systemctl disable --now ebpf-ingress.service || true
    "$(agent_bin)" detach --interface "$iface"

    say "2. the registry port forwarder stopped"
    if systemctl cat k3d-registry-port.service >/dev/null 2>&1; then
        systemctl disable --now k3d-registry-port.service
        rm -f /etc/systemd/system/k3d-registry-port.service "$etc/k3d-registry-port.env"
        systemctl daemon-reload
    fi

    say "3. the serverlb started (docker start $lb)"
    docker start "$lb" >/dev/null

    say "4. kgateway back to its replica counts"
    while read -r kind ns name count; do
        case "$kind" in
            controller | proxy) kubectl -n "$ns" scale deploy "$name" --replicas="$count" ;;
        esac
    done < "$state"
    if [ -f "$etc/config.toml.before-k3d" ]; then mv "$etc/config.toml.before-k3d" "$etc/config.toml"; fi
    rm -f "$state"

    say "5. checks (through the serverlb and kgateway again)"
    kubectl -n "$cp_ns" rollout status deploy/gateway-default --timeout=120s || true
    status
}

case "${1:-}" in
    over) shift; over "$@" ;;
    back) back ;;
    status) status ;;
    check) check ;;
    *) die "usage: takeover.sh over [--interface IFACE] | back | status | check" ;;
esac

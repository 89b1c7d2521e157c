#!/usr/bin/env bash
# The smoke test: every HTTPRoute hostname through 8080 (control plane) or 9080 (data
# plane) with its status and the backends the agent routes it to (its /routes:
# Service and endpoints), `kubectl get nodes` through 6550, `ingress stats`. Non-zero exit when a
# hostname gets no answer or a 5xx, or kubectl fails.
set -uo pipefail
# shellcheck source=vagrant/provision/versions.sh
. /src/ebpf-ingress/vagrant/provision/versions.sh
export KUBECONFIG=/root/.kube/config
cp_ns=openchoreo-control-plane
fail=0
printf '%-6s %-55s %-6s %s\n' PORT HOST STATUS BACKEND
while read -r ns host; do
    port=9080
    [ "$ns" = "$cp_ns" ] && port=8080
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Host: $host" "http://127.0.0.1:$port/")
    backend=$(curl -s --max-time 5 http://127.0.0.1:9901/routes |
        jq -r --arg h "$host" '[.. | objects | select(.hostname? == $h) | .rules[].backends[] | "\(.name) (\(.endpoints | join(" ")))"] | unique | join(", ")' 2>/dev/null)
    printf '%-6s %-55s %-6s %s\n' "$port" "$host" "$code" "${backend:--}"
    case "$code" in 000 | 5*) fail=1 ;; esac
done < <(kubectl get httproutes -A -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.spec.hostnames[*]}{"\n"}{end}' |
    awk '{for (i = 2; i <= NF; i++) print $1, $i}' | sort -u)
echo
if kubectl --server https://127.0.0.1:6550 get nodes; then
    echo "kubectl through 6550: ok"
else
    echo "kubectl through 6550: FAILED"
    fail=1
fi
echo
"$PREFIX/bin/ingress" stats || fail=1
exit "$fail"

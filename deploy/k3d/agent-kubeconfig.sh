#!/usr/bin/env bash
# Writes the agent's kubeconfig from the ebpf-host-ingress ServiceAccount's token
# (deploy/k3d/rbac.yaml), pointing at the k3d node's API server directly
# (https://NODE_INTERNAL_IP:6443), so the agent never depends on its own 6550
# forwarding and never runs with the cluster-admin kubeconfig k3d writes.
#
#   agent-kubeconfig.sh [OUTPUT]        (default /etc/ebpf-ingress/kubeconfig)
#
# Runs kubectl with the admin kubeconfig you already use (KUBECONFIG or ~/.kube/config):
# it applies rbac.yaml, waits for the token Secret to be filled, reads the token and the
# cluster CA from it, and the node's InternalIP from the Node object. Environment:
#   NODE   the Node (default k3d-openchoreo-server-0)
#   TOKEN  "secret" (default: the long-lived token Secret) or "request": a bound token
#          from `kubectl create token` (DURATION, default 8760h, capped by the API
#          server's --service-account-max-token-expiration); re-run before it expires.
set -euo pipefail
out=${1:-/etc/ebpf-ingress/kubeconfig}
node=${NODE:-k3d-openchoreo-server-0}
mode=${TOKEN:-secret}
ns=ebpf-host-ingress
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "agent-kubeconfig.sh: $*" >&2; exit 1; }
command -v kubectl >/dev/null || die "kubectl is not installed"

kubectl apply -f "$here/rbac.yaml" >/dev/null

ip=$(kubectl get node "$node" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}') ||
    die "cannot read Node $node (set NODE=...; kubectl get nodes lists them)"
[ -n "$ip" ] || die "Node $node has no InternalIP address"

ca=""
for _ in $(seq 1 30); do
    ca=$(kubectl -n "$ns" get secret ebpf-host-ingress-token -o jsonpath='{.data.ca\.crt}')
    [ -n "$ca" ] && break
    sleep 1
done
[ -n "$ca" ] || die "the token controller did not fill Secret $ns/ebpf-host-ingress-token within 30 s"

case "$mode" in
    secret) token=$(kubectl -n "$ns" get secret ebpf-host-ingress-token -o jsonpath='{.data.token}' | base64 -d) ;;
    request) token=$(kubectl -n "$ns" create token ebpf-host-ingress --duration "${DURATION:-8760h}") ;;
    *) die "TOKEN must be secret or request, not $mode" ;;
esac
[ -n "$token" ] || die "empty token"

mkdir -p "$(dirname "$out")"
umask 077
tmp=$(mktemp "$out.XXXXXX")
cat > "$tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: k3d-openchoreo-node
    cluster:
      server: https://$ip:6443
      certificate-authority-data: $ca
users:
  - name: ebpf-host-ingress
    user:
      token: $token
contexts:
  - name: ebpf-host-ingress
    context:
      cluster: k3d-openchoreo-node
      user: ebpf-host-ingress
current-context: ebpf-host-ingress
KUBECONFIG
mv "$tmp" "$out"
echo "wrote $out (server https://$ip:6443, ServiceAccount $ns/ebpf-host-ingress, $mode token)"
# what the account may do, as the API server sees it
kubectl --kubeconfig "$out" auth can-i list httproutes.gateway.networking.k8s.io --all-namespaces >/dev/null ||
    die "the new kubeconfig cannot list HTTPRoutes: check the ClusterRoleBinding"
if kubectl --kubeconfig "$out" auth can-i list secrets --all-namespaces >/dev/null 2>&1; then
    die "the agent's account can list Secrets: something grants it more than rbac.yaml"
fi

#!/usr/bin/env bash
# k3d, kubectl and helm at the versions of versions.sh, each checked before it is
# installed.
set -euo pipefail
# shellcheck source=vagrant/provision/versions.sh
. /src/ebpf-ingress/vagrant/provision/versions.sh
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cd "$w"

curl -fsSLo k3d "https://github.com/k3d-io/k3d/releases/download/$K3D_VERSION/k3d-linux-amd64"
curl -fsSLo k3d-checksums.txt "https://github.com/k3d-io/k3d/releases/download/$K3D_VERSION/checksums.txt"
echo "$K3D_SHA256  k3d" | sha256sum --check
grep -q "^$K3D_SHA256 " k3d-checksums.txt || { echo "k3d: the pinned digest is not in the release's checksums.txt" >&2; exit 1; }
install -m 0755 k3d /usr/local/bin/k3d

curl -fsSLo kubectl "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl"
curl -fsSLo kubectl.sha256 "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl.sha256"
echo "$KUBECTL_SHA256  kubectl" | sha256sum --check
[ "$(cat kubectl.sha256)" = "$KUBECTL_SHA256" ] || { echo "kubectl: dl.k8s.io's digest differs from the pinned one" >&2; exit 1; }
install -m 0755 kubectl /usr/local/bin/kubectl

curl -fsSLO "https://get.helm.sh/helm-$HELM_VERSION-linux-amd64.tar.gz"
curl -fsSLO "https://get.helm.sh/helm-$HELM_VERSION-linux-amd64.tar.gz.sha256sum"
sha256sum --check "helm-$HELM_VERSION-linux-amd64.tar.gz.sha256sum"
tar -xzf "helm-$HELM_VERSION-linux-amd64.tar.gz" linux-amd64/helm
install -m 0755 linux-amd64/helm /usr/local/bin/helm

k3d version
kubectl version --client
helm version --short

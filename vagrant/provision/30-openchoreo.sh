#!/usr/bin/env bash
# OpenChoreo v0.12.0's single-cluster quick start (install/k3d/single-cluster/README.md
# at that tag): the cluster with the serverlb as upstream makes it (the VM's data
# plane on 9080, as on the team's VM), cert-manager, the control and data planes, the
# DataPlane resource. The takeover (50-takeover.sh) then switches it over, as on an
# existing VM.
set -euo pipefail
# shellcheck source=vagrant/provision/versions.sh
. /src/ebpf-ingress/vagrant/provision/versions.sh
oc=/opt/openchoreo
if [ ! -d "$oc/.git" ]; then
    git clone --quiet --branch "$OPENCHOREO_REF" --depth 1 https://github.com/openchoreo/openchoreo.git "$oc"
fi
[ "$(git -C "$oc" rev-parse HEAD)" = "$OPENCHOREO_COMMIT" ] || { echo "openchoreo $OPENCHOREO_REF is not $OPENCHOREO_COMMIT" >&2; exit 1; }
cd "$oc"

if ! k3d cluster list openchoreo >/dev/null 2>&1; then
    # the team's VM: 9080 on the host for the data plane's 19080
    sed 's/- port: 19080:19080/- port: 9080:19080/' install/k3d/single-cluster/config.yaml > /tmp/k3d-openchoreo.yaml
    k3d cluster create --config /tmp/k3d-openchoreo.yaml
    docker exec k3d-openchoreo-server-0 sh -c "cat /proc/sys/kernel/random/uuid | tr -d '-' > /etc/machine-id"
fi
ctx=(--kube-context k3d-openchoreo)

helm upgrade --install cert-manager oci://quay.io/jetstack/charts/cert-manager --version "$CERT_MANAGER_VERSION" \
    "${ctx[@]}" --namespace cert-manager --create-namespace --set crds.enabled=true --wait
helm upgrade --install openchoreo-control-plane install/helm/openchoreo-control-plane --dependency-update \
    "${ctx[@]}" --namespace openchoreo-control-plane --create-namespace \
    --values install/k3d/single-cluster/values-cp.yaml
kubectl --context k3d-openchoreo wait --for=condition=available deployment/cluster-gateway \
    -n openchoreo-control-plane --timeout=300s
helm upgrade --install openchoreo-data-plane install/helm/openchoreo-data-plane --dependency-update \
    "${ctx[@]}" --namespace openchoreo-data-plane --create-namespace \
    --values install/k3d/single-cluster/values-dp.yaml
./install/add-data-plane.sh --control-plane-context k3d-openchoreo --name default
kubectl --context k3d-openchoreo wait --for=condition=available deployment --all \
    -n openchoreo-control-plane --timeout=600s
# the admin kubeconfig for root (the takeover and the smoke test run as root)
mkdir -p /root/.kube
k3d kubeconfig get openchoreo > /root/.kube/config

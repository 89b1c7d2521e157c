#!/usr/bin/env bash
# The k3d takeover (docs/k3d.md): serverlb stopped, kgateway at zero, the agent on
# 8080/9080 (L7) and 6550/10081/11080-11082 (L4). Skipped when already done.
set -euo pipefail
# shellcheck source=vagrant/provision/versions.sh
. /src/ebpf-ingress/vagrant/provision/versions.sh
if [ -f /etc/ebpf-ingress/k3d-takeover.state ]; then
    echo "takeover already applied"
    exit 0
fi
"$SRC/deploy/k3d/takeover.sh" over

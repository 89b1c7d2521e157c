#!/usr/bin/env bash
# Debian packages: Docker from Debian (docker.io), the build toolchain this project
# uses on Debian (rustc-web/cargo-web 1.96; `cargo xtask setup` adds the eBPF parts),
# and the tools the takeover and the smoke test run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    docker.io ca-certificates curl git jq socat iproute2 iptables \
    build-essential pkg-config rustc-web cargo-web
systemctl enable --now docker
usermod -aG docker vagrant
docker version --format 'docker {{.Server.Version}}'
cargo --version

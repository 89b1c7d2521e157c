#!/usr/bin/env bash
# Pinned versions and checksums of what the VM downloads (sourced by the others).
# kubectl's checksum agrees with two public pins of v1.32.9 and is also checked against
# dl.k8s.io's .sha256; k3d's is also checked against the release's checksums.txt.
# Neither download was run where this was written (no internet there): the first
# `vagrant up` is the check.
# shellcheck disable=SC2034  # used by the scripts that source this file
K3D_VERSION=v5.8.3
K3D_SHA256=dbaa79a76ace7f4ca230a1ff41dc7d8a5036a8ad0309e9c54f9bf3836dbe853e
# the k3s image's Kubernetes (rancher/k3s:v1.32.9-k3s1)
KUBECTL_VERSION=v1.32.9
KUBECTL_SHA256=509ae171bac7ad3b98cc49f5594d6bc84900cf6860f155968d1059fde3be5286
# verified against get.helm.sh's .sha256sum (no pinned digest)
HELM_VERSION=v3.17.3
# OpenChoreo's single-cluster quick start, v0.12.0 (install/k3d/single-cluster/README.md)
OPENCHOREO_REF=v0.12.0
OPENCHOREO_COMMIT=36a61ffc30817b92e0d075f2e99c0a9b8da2ad6c
CERT_MANAGER_VERSION=v1.16.2
SRC=/src/ebpf-ingress
# where `cargo xtask install --prefix` puts the agent (bin/ingress under it)
PREFIX=/usr/local

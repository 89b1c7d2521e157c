#!/usr/bin/env bash
# Builds a real kube-apiserver (v1.20.2) from Debian bookworm's `kubernetes` source
# package with Debian's Go, and copies it to $1. No registry here ships a binary.
# About 14 minutes on 2 cores and 3.2 GB of scratch space; callers cache the result.
# Also installs etcd, which the API server needs at run time.
set -euo pipefail
out=${1:?usage: build-kube-apiserver.sh OUTPUT_PATH}
export DEBIAN_FRONTEND=noninteractive
pkgs=(golang-go etcd-server etcd-client rsync jq golang-github-modern-go-reflect2-dev dpkg-dev make openssl curl)
apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
if [ -x "$out" ]; then exit 0; fi

w=$(mktemp -d /tmp/kube-apiserver-build.XXXXXX)
trap 'rm -rf "$w"' EXIT
# A private sources.list with deb-src lines for the mirror the system already uses,
# so the system's apt configuration is not touched.
mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
security=${mirror%/debian}/debian-security
printf 'deb-src %s bookworm main\ndeb-src %s bookworm-security main\n' "$mirror" "$security" > "$w/sources.list"
mkdir -p "$w/lists/partial"
o=(-o "Dir::Etc::SourceList=$w/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$w/lists")
apt-get "${o[@]}" update -q >/dev/null
(cd "$w" && apt-get "${o[@]}" source --download-only kubernetes >/dev/null)
dscs=("$w"/kubernetes_*.dsc) # a glob expands sorted: the last is the newest
dsc=${dscs[-1]}
dpkg-source -x "$dsc" "$w/src" >/dev/null
cd "$w/src"
# The vendored reflect2 1.0.1 crashes with Go >= 1.18 on the first custom-resource create.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
mkdir -p .go/src/k8s.io && ln -s ../../.. .go/src/k8s.io/kubernetes
env HOME="$w/home" GOPATH="$w/src/.go" GOCACHE="$w/gocache" GOPROXY=off CGO_ENABLED=0 \
    make WHAT=cmd/kube-apiserver >/dev/null
mkdir -p "$(dirname "$out")"
cp _output/bin/kube-apiserver "$out.tmp"
mv "$out.tmp" "$out"
"$out" --version

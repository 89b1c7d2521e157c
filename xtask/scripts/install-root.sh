#!/usr/bin/env bash
# Makes the throwaway Debian 12 root the install tier boots with systemd-nspawn:
# debootstrap --variant=minbase from the mirror the system already uses, plus systemd,
# dbus (systemctl inside), iproute2, busybox (the tier's HTTP backend) and procps
# (/bin/kill, the units' ExecReload; every standard Debian system has it). Written to
# $1 (a cache directory, once per machine; the tier copies it for every run), with a
# stamp file naming the package list, so a changed list makes a new root.
set -euo pipefail
out=${1:?usage: install-root.sh OUTPUT_DIR}
include=systemd,systemd-sysv,dbus,iproute2,busybox,procps
stamp="$out/.ingress-install-root"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "bookworm minbase $include" ]; then exit 0; fi
export DEBIAN_FRONTEND=noninteractive
command -v debootstrap >/dev/null || apt-get install -y -q --no-install-recommends debootstrap >/dev/null
mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
work="$out.tmp"
rm -rf "$work"
debootstrap --variant=minbase --include="$include" bookworm "$work" "$mirror"
# No login prompt to wait for and no machine-id conflicts: each boot gets a fresh one.
rm -f "$work/etc/machine-id" && : > "$work/etc/machine-id"
printf 'bookworm minbase %s\n' "$include" > "$work/.ingress-install-root"
rm -rf "$out"
mv "$work" "$out"

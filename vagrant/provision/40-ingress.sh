#!/usr/bin/env bash
# This project: the eBPF toolchain (`cargo xtask setup`), the release build and the
# service (`cargo xtask install`), not started yet: the takeover starts it.
set -euo pipefail
# shellcheck source=vagrant/provision/versions.sh
. /src/ebpf-ingress/vagrant/provision/versions.sh
cd "$SRC"
cargo xtask setup
cargo xtask install --no-start --prefix "$PREFIX"
"$PREFIX/bin/ingress" check || true

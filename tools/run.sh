#!/usr/bin/env bash
# Installs what is missing, builds pcifs, and shows the embedded default
# simulated devices: their config space as lspci decodes it.
# (Until the FUSE mount lands, this is what pcifs can serve; see README.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j "$(nproc)" --target pcifs-dump
dump=$(mktemp); trap 'rm -f "$dump"' EXIT
build/release/pcifs-dump --backend="${1:-sim}" >"$dump"
echo "=== the devices pcifs serves (${1:-sim}), decoded by lspci -F:"
lspci -F "$dump" -nn
echo
echo "=== in detail (lspci -F DUMP -vvv):"
lspci -F "$dump" -vvv

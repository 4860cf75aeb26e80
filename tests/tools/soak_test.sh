#!/bin/bash
# The 1-minute soak (tools/soak.sh 1) under CTest, on the build under test:
# a host daemon under pcifs-supervise with readers as nobody, mapped BAR users,
# DOE clients, killed claimers, power/reset toggling, view churn, simulated
# removal and hot-plug; its RSS, fds and threads must stay flat and no client
# may see ENOTCONN or an errno outside its kind's list. Skips (77) without
# root, /dev/fuse, runuser, python3 or cc. PCIFS_SOAK_ARGS adds options
# (e.g. --restarts=15).
BUILD=${PCIFS_BUILD_DIR:?PCIFS_BUILD_DIR not set}
SRC=${PCIFS_SOURCE_DIR:?PCIFS_SOURCE_DIR not set}
[ -x "$BUILD/pcifs-supervise" ] || { echo "FAIL: $BUILD/pcifs-supervise not built"; exit 1; }
# shellcheck disable=SC2086
PCIFS_BUILD=$BUILD PCIFS_SOAK_NO_BUILD=1 exec bash "$SRC/tools/soak.sh" 1 ${PCIFS_SOAK_ARGS:-}

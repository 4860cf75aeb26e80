#!/usr/bin/env bash
# kit_extras.sh KIT: after ../shared/tools/device-kit.sh BUILD KIT, makes the
# kit ready for tools/bench/many_core.sh: strips the pcifs binaries of their
# debug information but keeps their symbols (perf names the daemon's
# functions: 170 MiB -> 10 MiB), and adds perf with the libraries a stock
# Ubuntu or Debian machine may lack (KIT/perf/, about 30 MiB), for the
# profiles under one reader per CPU.
set -euo pipefail
kit=${1:?usage: kit_extras.sh KIT}
[ -d "$kit/bin" ] || { echo "kit_extras.sh: $kit/bin: not a kit (device-kit.sh first)" >&2; exit 2; }
for b in "$kit"/bin/pcifs*; do strip --strip-debug "$b"; done
if perf=$(command -v perf); then
  mkdir -p "$kit/perf/lib"
  cp -L "$perf" "$kit/perf/perf"
  # glibc, libstdc++, libgcc and zlib are on every machine, in a newer
  # version: copying ours would shadow them.
  ldd "$perf" | awk '$3 ~ /^\// {print $3}' |
    grep -vE '/(libc|libm|libstdc\+\+|libgcc_s|libz|ld-linux[^/]*)\.so' |
    while read -r l; do cp -L "$l" "$kit/perf/lib/"; done
else
  echo "kit_extras.sh: no perf here: many_core.sh will skip its profiles" >&2
fi
du -sh "$kit"

#!/bin/bash
# Tool test of tools/soak/flatness.py, the soak's flatness check, on made-up
# samples (the soak itself is tools.soak_test): one sample's RSS spike in the
# last third is not growth; a leak (every later sample higher), an extra
# thread pool or leaked fds are, each in either daemon (negative controls);
# too few samples is an error. Needs python3. Exit 77: skipped.
set -u
SRC=${PCIFS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; }

# samples FILE N RSS(i) FDS(i) THREADS(i) HP_RSS(i): N rows of the soak's
# samples.raw, each figure an arithmetic expression of the sample index i.
samples() {
  local f=$1 n=$2 i
  : >"$f"
  for ((i = 0; i < n; i++)); do
    echo "$((1000 + 3 * i)) 1 4242 $(($3)) $(($4)) $(($5)) $(($6)) 12 9" >>"$f"
  done
}
# expect RC NAME FILE
expect() {
  local out rc line
  out=$(python3 "$SRC/tools/soak/flatness.py" "$3")
  rc=$?
  while IFS= read -r line; do echo "  $2: $line"; done <<<"$out"
  [ "$rc" = "$1" ] || fail "$2: exit $rc, expected $1"
}

# Flat after a warm-up that grows from 60 to 88 MB.
samples "$W/flat" 21 'i < 7 ? 60000 + 4000 * i : 88000' 30 20 40000
expect 0 flat "$W/flat"
# The soak's TSan run that failed the maximum rule: one sample at 106.8 MB.
samples "$W/spike" 21 'i < 7 ? 60000 + 4000 * i : (i == 17 ? 106800 : 95000)' 30 20 40000
expect 0 "one spike" "$W/spike"
# Negative controls.
samples "$W/leak" 21 'i < 7 ? 60000 + 4000 * i : 88000 + 2500 * (i - 7)' 30 20 40000
expect 1 "RSS leak" "$W/leak"
samples "$W/hpleak" 21 '88000' 30 20 'i < 14 ? 40000 : 60000'
expect 1 "hot-plug RSS leak" "$W/hpleak"
samples "$W/threads" 21 '88000' 30 'i < 14 ? 20 : 33' 40000
expect 1 "threads" "$W/threads"
samples "$W/fds" 21 '88000' 'i < 14 ? 30 : 39' 20 40000
expect 1 "fds" "$W/fds"
samples "$W/few" 2 '88000' 30 20 40000
expect 2 "two samples" "$W/few"

grep -q "GREW" <<<"$(python3 "$SRC/tools/soak/flatness.py" "$W/leak")" || fail "leak: no GREW line"
[ "$FAILED" = 0 ] && echo "PASS"
exit "$FAILED"

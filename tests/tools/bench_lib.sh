# Sourced by the bench tests: a private work dir whose tmp/ is $TMPDIR (the
# bench makes its temp dirs there, so its mounts are told apart from anyone
# else's), removed at exit with any mount left under it; and fail(), which
# marks the run failed ($FAILED) and goes on.
WORK=$(mktemp -d)
export TMPDIR=$WORK/tmp
mkdir -p "$TMPDIR"
# shellcheck disable=SC2317 # called by the EXIT trap
bench_cleanup() {  # a safety net: the test fails before it gets here if it was needed
  grep -o " ${WORK}[^ ]*" /proc/mounts | while read -r m; do
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap bench_cleanup EXIT
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; }

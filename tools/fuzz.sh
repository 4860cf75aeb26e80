#!/usr/bin/env bash
# Runs every libFuzzer harness (tests/fuzz/<name>_fuzz.cpp) for SECONDS each
# (default 60), one at a time, each starting from its seed corpus
# tests/fuzz/corpus/<name>/. New inputs go to build/fuzz/new/<name>/, not to
# the repository, unless --merge is given: then the inputs that add coverage
# are merged into the repository corpus (libFuzzer -merge=1 -use_counters=0:
# only inputs that reach new edges, which keeps the corpora and their replay
# small). Crashes, hangs, leaks and oracle findings are
# written to build/fuzz/findings/<name>/.
#
# Usage: tools/fuzz.sh [--merge] [SECONDS] [NAME...]
# Environment: PCIFS_FUZZ_BUILD (build dir), PCIFS_FUZZ_NO_BUILD=1 (use what is
# built there), PCIFS_FUZZ_NICE="nice -n 10" (a prefix for each run),
# PCIFS_FUZZ_MALLOC_MB / PCIFS_FUZZ_RSS_MB / PCIFS_FUZZ_TIMEOUT (limits below).
# Prints per harness: executions, final cov/ft, new units, findings. Exit 1 if
# any harness found anything. Needs clang with libFuzzer (clang 14+).
set -euo pipefail
cd "$(dirname "$0")/.."

merge=0
if [[ ${1:-} == --merge ]]; then merge=1; shift; fi
seconds=60
if [[ ${1:-} =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
dir=${PCIFS_FUZZ_BUILD:-build/fuzz}

# The stated maxima [S13]: one DOE object is at most 2^18 dwords (1 MiB), a
# control request line 1 MiB, a ROM 16 MiB, a device set 65536 functions.
# Nothing a client sends may make one allocation larger than this, nor the
# process larger than the RSS limit.
malloc_limit_mb=${PCIFS_FUZZ_MALLOC_MB:-128}
rss_limit_mb=${PCIFS_FUZZ_RSS_MB:-2048}
timeout_s=${PCIFS_FUZZ_TIMEOUT:-30}  # one input; a hang past this is a finding

if [[ -z ${PCIFS_FUZZ_NO_BUILD:-} ]]; then  # set it to run what $dir holds
  echo "=== configure + build $dir (clang, libFuzzer, ASan+UBSan)"
  mkdir -p "$dir"
  CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ -DPCIFS_WERROR=ON -DPCIFS_FUZZ=ON \
    -DPCIFS_SANITIZE=address,undefined >"$dir/configure.log" 2>&1 \
    || { cat "$dir/configure.log"; exit 1; }
  cmake --build "$dir" --target fuzzers -j "${JOBS:-$(nproc)}"
fi

names=("$@")
if ((${#names[@]} == 0)); then
  for f in tests/fuzz/*_fuzz.cpp; do n=$(basename "$f" _fuzz.cpp); names+=("$n"); done
fi

failed=0
summary=()
for n in "${names[@]}"; do
  bin=$dir/fuzz_$n
  corpus=tests/fuzz/corpus/$n
  new=$dir/new/$n
  findings=$dir/findings/$n
  log=$dir/logs/$n.log
  [[ -x $bin ]] || { echo "no harness $n ($bin)" >&2; exit 2; }
  mkdir -p "$corpus" "$new" "$findings" "$(dirname "$log")"
  echo "=== $n: ${seconds}s"
  stamp=$dir/logs/$n.start
  : >"$stamp"
  rc=0
  ${PCIFS_FUZZ_NICE:-} env ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
    "$bin" -max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss_limit_mb" \
    -malloc_limit_mb="$malloc_limit_mb" -print_final_stats=1 -artifact_prefix="$findings/" \
    "$new" "$corpus" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  units=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=$(find "$findings" -type f -newer "$stamp" | wc -l)  # this run's only
  if ((rc != 0 || crashes != 0)); then
    failed=1
    grep -E 'ERROR|FUZZ FINDING|SUMMARY|Test unit written' "$log" | head -20 || true
  fi
  if ((merge)); then
    "$bin" -merge=1 -use_counters=0 -rss_limit_mb="$rss_limit_mb" \
      -malloc_limit_mb="$malloc_limit_mb" -timeout="$timeout_s" "$corpus" "$new" >>"$log" 2>&1 || failed=1
  fi
  line=$(printf '%-18s execs %-10s cov %-6s ft %-6s new units %-5s corpus %-5s findings %s (rc %s)' \
    "$n" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${units:-?}" "$(find "$corpus" -type f | wc -l)" \
    "$crashes" "$rc")
  echo "$line"
  summary+=("$line")
done
echo "=== summary (${seconds}s each; logs in $dir/logs, findings in $dir/findings)"
printf '%s\n' "${summary[@]}"
exit $failed

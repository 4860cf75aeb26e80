#!/usr/bin/env bash
# Installs what is missing, builds and runs the whole test suite, the way CI does:
#   plain (GCC, -Werror), ASan+UBSan (clang, -Werror, -Wthread-safety), TSan (clang),
#   then the format and lint checks.
# Usage: tools/test.sh [plain|asan|tsan|lint]...   (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh

JOBS=${JOBS:-$(nproc)}
configs=("$@")
((${#configs[@]})) || configs=(plain asan tsan lint)

build_and_test() {  # name, cmake args...
  local name=$1; shift
  local dir=build/ci-$name
  echo "=== [$name] configure + build"
  cmake -S . -B "$dir" -G Ninja -DPCIFS_WERROR=ON -DPCIFS_DEBUG_LINES_ONLY=ON "$@" >"$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j "$JOBS"
  echo "=== [$name] test"
  (cd "$dir" && ctest --output-on-failure -j "$JOBS" --timeout 600)
}

mkdir -p build
for c in "${configs[@]}"; do
  case $c in
    plain) build_and_test plain -DCMAKE_BUILD_TYPE=RelWithDebInfo ;;
    asan)  CC=clang CXX=clang++ build_and_test asan -DCMAKE_BUILD_TYPE=Debug \
             -DCMAKE_CXX_COMPILER=clang++ -DPCIFS_SANITIZE=address,undefined ;;
    # detect_deadlocks: lock-order inversions fail the run (the order is in
    # fs/core/mediator_state.hpp); second_deadlock_stack: both nestings shown.
    tsan)  TSAN_OPTIONS="halt_on_error=1 detect_deadlocks=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" \
           build_and_test tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
             -DCMAKE_CXX_COMPILER=clang++ -DPCIFS_SANITIZE=thread ;;
    lint)  bash tools/lint.sh ;;
    *) echo "unknown configuration: $c" >&2; exit 2 ;;
  esac
done
echo "=== all configurations passed: ${configs[*]}"

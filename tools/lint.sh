#!/usr/bin/env bash
# Format check (clang-format) and the layering rule of STYLE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cpp' '*.hpp')
echo "=== clang-format check (${#files[@]} files)"
clang-format --dry-run --Werror "${files[@]}"
echo "=== layering: fs/core, fs/control and backend/* include no fuse; backends include no core"
bad=$(grep -lE '#include [<"](fuse|fuse3/|fuse_lowlevel)' fs/core backend include -r || true)
bad+=$(grep -lE '#include "core/' backend include -r || true)
bad+=$(grep -lE '#include ([<"](fuse|fuse3/|fuse_lowlevel)|"fuse/)' fs/control -r || true)
bad+=$(grep -lE '#include [<"](spdlog|liburing|nlohmann|fuse)' include -r || true)
if [[ -n $bad ]]; then echo "layering violated in: $bad"; exit 1; fi
if [[ -f ${PCIFS_COMPILE_DB:-build/ci-plain}/compile_commands.json ]]; then
  echo "=== clang-tidy (bugprone, performance, concurrency; warnings are errors)"
  run-clang-tidy -p "${PCIFS_COMPILE_DB:-build/ci-plain}" -j "$(nproc)" -quiet \
    "^$(pwd -P)/(fs|backend|tools)/.*\\.cpp\$" >build/clang-tidy.log 2>&1 \
    || { grep -E "(warning|error):" build/clang-tidy.log; exit 1; }
else
  echo "=== clang-tidy skipped: no compile database (run the plain build first)"
fi
echo "lint: ok"

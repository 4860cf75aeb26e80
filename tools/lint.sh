#!/usr/bin/env bash
# Format check (clang-format) and the layering rule of STYLE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cpp' '*.hpp')
echo "=== clang-format check (${#files[@]} files)"
clang-format --dry-run --Werror "${files[@]}"
echo "=== layering: fs/core and backend/* include no fuse; backends include no core"
bad=$(grep -lE '#include [<"](fuse|fuse3/|fuse_lowlevel)' fs/core backend include -r || true)
bad+=$(grep -lE '#include "core/' backend include -r || true)
bad+=$(grep -lE '#include [<"](spdlog|liburing|nlohmann|fuse)' include -r || true)
if [[ -n $bad ]]; then echo "layering violated in: $bad"; exit 1; fi
echo "lint: ok"

#!/usr/bin/env bash
# Count the host lines of each GPU backend: non-blank, non-comment lines of
# backends/<name>/src/**/*.rs (tests included when they live in src/). Issue 20's
# measure of how much host logic a backend repeats; the shared crates are printed too.
#
#   scripts/host-lines.sh              wgpu, vulkan, cuda, gpu-host, kernels-wgsl
#   scripts/host-lines.sh wgpu vulkan  only these (a name under backends/ or a crate folder)
set -euo pipefail
cd "$(dirname "$0")/.."

names=("$@")
[ ${#names[@]} -eq 0 ] && names=(wgpu vulkan cuda gpu-host kernels-wgsl)

count() {
  # Drops blank lines, `//` and `//!` / `///` comment lines, and lines inside `/* */`.
  find "$1" -name '*.rs' -print0 | xargs -0 cat | awk '
    /^[[:space:]]*\/\*/ { block = 1 }
    block { if ($0 ~ /\*\//) block = 0; next }
    /^[[:space:]]*$/ { next }
    /^[[:space:]]*\/\// { next }
    { n++ }
    END { print n + 0 }'
}

for name in "${names[@]}"; do
  dir=backends/$name/src
  [ -d "$dir" ] || dir=$name/src
  [ -d "$dir" ] || { echo "no such backend or crate: $name" >&2; exit 2; }
  printf '%-14s %6d\n' "$name" "$(count "$dir")"
done

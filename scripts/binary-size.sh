#!/usr/bin/env bash
# Build the release `kiln` binary for each feature set and the C library, and print their
# sizes. Copies land in target/size/ (kiln-<set>, libkiln.so, libkiln.a), where
# tests/tests/size.rs checks them against the budgets; target/release/kiln is left as the
# full build.
#
#   scripts/binary-size.sh            every set
#   scripts/binary-size.sh cpu full   only these sets (ref, cpu, full, capi)
#
# Sets: ref = no backend (the reference pass only); cpu = the CPU backend, no HTTP server
# (the edge build); full = every backend in the tree and `kiln serve` (the default
# features plus backend-wgpu, backend-vulkan and backend-cuda);
# capi = libkiln.so / libkiln.a (CPU backend).
set -euo pipefail
cd "$(dirname "$0")/.."

sets=("$@")
[ ${#sets[@]} -eq 0 ] && sets=(ref cpu capi full)
out=target/size
mkdir -p "$out"

features() {
  case "$1" in
    ref) echo "--no-default-features" ;;
    cpu) echo "--no-default-features --features backend-cpu" ;;
    full) echo "--features backend-wgpu,backend-vulkan,backend-cuda" ;;
    *) echo "unknown set $1 (ref, cpu, full, capi)" >&2; exit 2 ;;
  esac
}

rows=()
for set in "${sets[@]}"; do
  if [ "$set" = capi ]; then
    cargo build --release -p kiln-capi --lib >&2
    cp target/release/libkiln.so target/release/libkiln.a "$out/"
    rows+=("| capi | \`cargo build --release -p kiln-capi\` | libkiln.so | $(stat -c %s "$out/libkiln.so") |")
    rows+=("| capi | (same) | libkiln.a | $(stat -c %s "$out/libkiln.a") |")
    continue
  fi
  # shellcheck disable=SC2046
  cargo build --release -p kiln-cli --bin kiln $(features "$set") >&2
  cp target/release/kiln "$out/kiln-$set"
  f=$(features "$set")
  rows+=("| $set | \`cargo build --release -p kiln-cli${f:+ $f}\` | kiln | $(stat -c %s "$out/kiln-$set") |")
done
# Leave target/release/kiln as the full build when another set came last.
if [ "${sets[-1]}" != full ] && [[ " ${sets[*]} " == *" full "* ]]; then
  # shellcheck disable=SC2046
  cargo build --release -p kiln-cli --bin kiln $(features full) >&2
fi

echo "| set | command | file | bytes |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"

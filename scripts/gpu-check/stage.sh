#!/usr/bin/env bash
# Stage everything the GPU check needs in .gpu/ (git-ignored) at the project root, on a
# machine with Rust (no GPU needed): kiln with every backend (release), the CUDA test
# binaries (kiln-tests: conformance, cuda_backend, cuda_nvrtc, cuda_disasm), the prefill
# GEMM and long-context attention benches (kiln-bench's gemm and attention_long, as
# b_gemm, b_attention_long), cuda-report,
# cuobjdump and nvdisasm from their PyPI wheels when installed, a tiny GGUF to take the tokenizer from (the
# reference models are too big to carry), the Vulkan loader packages a bare GPU machine may
# lack, and run.sh. The folder must stay under 64 MiB (what a device run carries); the
# script fails when it does not. Then on the GPU machine, from the project root:
#   bash scripts/gpu-check/run.sh      (or bash .gpu/run.sh where only .gpu/ was copied)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu
limit=$((64 << 20))
rm -rf "$out"; mkdir -p "$out/gl"
git check-ignore -q "$out/" || { echo "stage.sh: $out/ is not git-ignored (.gitignore)" >&2; exit 1; }

cargo build --release -p kiln-cli --features backend-wgpu,backend-vulkan,backend-cuda
cp target/release/kiln "$out/kiln"; strip "$out/kiln"

# The test binaries, found by target name in cargo's JSON messages (their file names carry
# a hash).
tests="conformance cuda_backend cuda_nvrtc cuda_disasm"
cargo build -p kiln-tests --bin cuda-report
cp target/debug/cuda-report "$out/cuda-report"; strip "$out/cuda-report"
cargo test --no-run --message-format=json -p kiln-tests 2>/dev/null |
  python3 -c '
import json, sys
wanted = set(sys.argv[1].split())
for line in sys.stdin:
    try: d = json.loads(line)
    except ValueError: continue
    if d.get("reason") != "compiler-artifact" or not d.get("executable"): continue
    name = d["target"]["name"]
    if "test" not in d["target"]["kind"]: continue
    if name in wanted: print(name, d["executable"])' "$tests" |
  while read -r name path; do cp "$path" "$out/t_$name"; strip "$out/t_$name"; done
for t in $tests; do [ -f "$out/t_$t" ] || { echo "stage.sh: no test binary named $t (renamed? update \$tests)" >&2; exit 1; }; done

# The prefill GEMM suite and the long-context attention suite (criterion, release), run
# on CUDA alone by run.sh as b_gemm and b_attention_long.
benches="gemm attention_long"
for b in $benches; do
  cargo bench --no-run --message-format=json -p kiln-bench --bench "$b" 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try: d = json.loads(line)
    except ValueError: continue
    if d.get("reason") == "compiler-artifact" and d.get("executable") and d["target"]["name"] == sys.argv[1]:
        print(d["executable"])' "$b" |
    while read -r path; do cp "$path" "$out/b_$b"; strip "$out/b_$b"; done
  [ -f "$out/b_$b" ] || { echo "stage.sh: no bench binary named $b" >&2; exit 1; }
done

# cuobjdump and the nvdisasm it runs, for cuda-report and t_cuda_disasm, in case the GPU
# machine's toolkit lacks them.
wheel_bin=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "bin"))' 2>/dev/null || true)
if [ -x "$wheel_bin/cuobjdump" ] && [ -x "$wheel_bin/nvdisasm" ]; then
  cp "$wheel_bin/cuobjdump" "$wheel_bin/nvdisasm" "$out/"
else
  echo "no cuobjdump/nvdisasm staged (pip install nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86)"
fi

"$out/kiln" synth --shape custom --layers 1 --dim 32 --heads 1 --kv-heads 1 --ffn 32 --quant q8_0 \
  --tokenizer-from models/SmolLM2-135M-Instruct.Q4_1.gguf -o "$out/tok.gguf" >/dev/null

# Vulkan loader and GL/EGL vendor libraries (x86-64), unpacked on the GPU machine by run.sh.
lists=$(mktemp -d); mkdir -p "$lists/partial"
o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
# shellcheck disable=SC2086
apt-get $o update >/dev/null 2>&1 && (cd "$out/gl" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1) || echo "no Vulkan loader packages staged"
rm -rf "$lists"

cp scripts/gpu-check/run.sh "$out/run.sh"
git rev-parse HEAD > "$out/commit"
size=$(du -sb "$out" | cut -f1)
ls -l "$out"
echo "$out: $((size >> 20)) MiB of $((limit >> 20)) MiB ($(cat "$out/commit"))"
[ "$size" -le "$limit" ] || { echo "stage.sh: $out is over $((limit >> 20)) MiB" >&2; exit 1; }

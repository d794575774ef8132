"""Record llama.cpp's greedy ids and top-10 for kiln's synthesized -tiny family models."""
import hashlib, json, subprocess, sys

KILN = "/work/wt/families/target/release/kiln"
TOOL = "/work/llama-greedy/llama_greedy"
OUT = "/work/wt/families/tests/data/reference/families"
SEED, QUANT, N = 7, "q8_0", 32
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village",
    "<|im_start|>user What is 2+2?<|im_end|><|im_start|>assistant",
]

def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h

for shape in sys.argv[1:]:
    path = f"/work/families-models/{shape}-{QUANT}-seed{SEED}.gguf"
    subprocess.run([KILN, "synth", "--shape", shape, "--quant", QUANT, "--seed", str(SEED), "-o", path], check=True, capture_output=True, cwd="/work/wt/families")
    data = open(path, "rb").read()
    runs = {}
    for fa in (0, 1):
        out = subprocess.run([TOOL, path, str(N), str(fa)], input="\n".join(PROMPTS) + "\n", capture_output=True, text=True, check=True).stdout
        runs[fa] = [json.loads(l) for l in out.splitlines() if l.strip()]
    prompts = []
    for i, p in enumerate(PROMPTS):
        off, on = runs[0][i], runs[1][i]
        assert off["prompt_ids"] == on["prompt_ids"]
        common = 0
        for a, b in zip(off["greedy_ids"], on["greedy_ids"]):
            if a != b:
                break
            common += 1
        prompts.append({
            "prompt": p,
            "prompt_ids": off["prompt_ids"],
            "greedy_ids_fa_off": off["greedy_ids"],
            "top10_fa_off": off["top10"],
            "greedy_ids_fa_on": on["greedy_ids"],
            "top10_fa_on": on["top10"],
            "common_prefix_fa_off_fa_on": common,
        })
    doc = {
        "description": f"llama.cpp 0c1e570 (vendored in llama_cpp_python 0.3.36; CPU, -DGGML_NATIVE=ON, 2 threads, f16 KV, n_ctx 512) on `kiln synth --shape {shape} --quant {QUANT} --seed {SEED}` (SmolLM2's tokenizer): greedy ids ({N} tokens, pure argmax, no stop) and the top-10 log-probabilities at the last prompt position, flash attention off and on; BOS as the model says (none), special tokens parsed. common_prefix_fa_off_fa_on: how far llama.cpp agrees with itself.",
        "shape": shape,
        "quant": QUANT.upper(),
        "seed": SEED,
        "gguf_bytes": len(data),
        "gguf_sha256": hashlib.sha256(data).hexdigest(),
        "gguf_fnv1a64": f"{fnv1a64(data):016x}",
        "prompts": prompts,
    }
    json.dump(doc, open(f"{OUT}/{shape}.json", "w"), indent=1)
    print(shape, [(p["common_prefix_fa_off_fa_on"]) for p in prompts])

#!/usr/bin/env python3
"""Benchmark `kiln serve` over HTTP (Python standard library only).

Measures, on one server:
  1. aggregate decode throughput with 1 and with N concurrent streams (greedy, ignore_eos,
     so every stream makes exactly --tokens tokens); per stream, decode rate is
     (tokens - 1) / (last token time - first token time), and the aggregate is their sum
     (the median of --repeat runs, the stream counts alternating);
  2. time to first token of a chat request whose ~1,000-token system prompt is new, then
     of a second request sharing that system prompt (the prefix cache's effect).

Either point it at a running server (--url) or let it start one (--kiln BIN --model GGUF).
Prints a table, and one JSON object as the last line with --json.
"""

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.parse

WORDS = (
    "the kiln engine pages its cache and batches many streams into one step so that "
    "weights read from memory serve every sequence at once while each request keeps its "
    "own sampler and its own stop conditions and the scheduler admits work as pages free up"
).split()


def post_stream(url, path, body, timeout=600):
    """POST with stream=true; returns (first token time, last token time, usage, text)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    payload = dict(body, stream=True, stream_options={"include_usage": True})
    start = time.perf_counter()
    conn.request("POST", path, json.dumps(payload), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"{path}: HTTP {resp.status}: {resp.read()[:300]!r}")
    first = last = None
    usage = None
    text = []
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(chunk["error"]["message"])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices", []):
            piece = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            if piece:
                now = time.perf_counter()
                first = first or now
                last = now
                text.append(piece)
    conn.close()
    return start, first, last, usage, "".join(text)


def throughput(url, model, n_streams, n_tokens):
    results = [None] * n_streams
    errors = []

    def client(i):
        # Different prompts, so no stream is a copy of another.
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(12)]
        body = {
            "model": model,
            "prompt": f"Story {i}: " + " ".join(words),
            "max_tokens": n_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        try:
            results[i] = post_stream(url, "/v1/completions", body)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_streams)]
    wall0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall0
    if errors:
        raise errors[0]
    rates, ttfts, total = [], [], 0
    for start, first, last, usage, _ in results:
        n = usage["completion_tokens"]
        total += n
        ttfts.append(first - start)
        if n > 1 and last > first:
            rates.append((n - 1) / (last - first))
    return {
        "streams": n_streams,
        "tokens_per_stream": n_tokens,
        "decode_tok_s": sum(rates),
        "per_stream_decode_tok_s": sum(rates) / len(rates),
        "wall_tok_s": total / wall,
        "ttft_ms_mean": 1e3 * sum(ttfts) / len(ttfts),
    }


def shared_prefix_ttft(url, model, system_tokens):
    # A nonce first, so that the first request never finds the prompt in the cache.
    nonce = f"Session {time.time_ns()}."
    n_words = int(system_tokens * 0.97)
    system = nonce + " " + " ".join(WORDS[k % len(WORDS)] for k in range(n_words))
    out = []
    for question in ["What does the scheduler do?", "Why are pages shared?"]:
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            "max_tokens": 4,
            "temperature": 0,
        }
        start, first, _, usage, _ = post_stream(url, "/v1/chat/completions", body)
        out.append({
            "ttft_ms": 1e3 * (first - start),
            "prompt_tokens": usage["prompt_tokens"],
            "cached_tokens": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0),
        })
    return {"first": out[0], "second": out[1], "speedup": out[0]["ttft_ms"] / out[1]["ttft_ms"]}


def start_server(kiln, model, extra):
    cmd = [kiln, "serve", "-m", model, "--port", "0", "--json", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        sys.exit(f"kiln serve exited ({proc.returncode}) before listening")
    info = json.loads(line)
    return proc, info["url"], info["model"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running kiln serve (default: start one)")
    p.add_argument("--kiln", default="target/release/kiln")
    p.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    p.add_argument("--serve-args", default="", help="extra arguments for kiln serve")
    p.add_argument("--streams", default="1,32", help="comma-separated stream counts")
    p.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    p.add_argument("--system-tokens", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3, help="throughput runs per stream count (median)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    proc = None
    if args.url:
        url = args.url.rstrip("/")
        conn = http.client.HTTPConnection(urllib.parse.urlparse(url).netloc)
        conn.request("GET", "/v1/models")
        model = json.loads(conn.getresponse().read())["data"][0]["id"]
    else:
        proc, url, model = start_server(args.kiln, args.model, args.serve_args.split())
    try:
        # Warm up (first-touch of weights and pages), not measured.
        throughput(url, model, 1, 4)
        # Stream counts alternate, so that a change in machine load hits all of them alike;
        # each figure is the median over the repeats.
        counts = [int(n) for n in args.streams.split(",")]
        samples = {n: [] for n in counts}
        for _ in range(args.repeat):
            for n in counts:
                samples[n].append(throughput(url, model, n, args.tokens))
        runs = []
        for n in counts:
            ordered = sorted(samples[n], key=lambda r: r["decode_tok_s"])
            median = dict(ordered[len(ordered) // 2])
            median["decode_tok_s_all"] = [round(r["decode_tok_s"], 1) for r in samples[n]]
            runs.append(median)
        prefix = shared_prefix_ttft(url, model, args.system_tokens)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=60)

    base = runs[0]["decode_tok_s"]
    for r in runs:
        r["speedup_vs_first"] = r["decode_tok_s"] / base
        print(
            f"{r['streams']:>3} streams x {r['tokens_per_stream']} tokens: "
            f"decode {r['decode_tok_s']:8.1f} tok/s aggregate "
            f"({r['per_stream_decode_tok_s']:.1f} per stream, {r['speedup_vs_first']:.2f}x), "
            f"wall {r['wall_tok_s']:.1f} tok/s, mean TTFT {r['ttft_ms_mean']:.0f} ms; "
            f"runs {r['decode_tok_s_all']}"
        )
    f, s = prefix["first"], prefix["second"]
    print(
        f"shared {f['prompt_tokens']}-token prompt: TTFT first {f['ttft_ms']:.0f} ms "
        f"(cached {f['cached_tokens']}), second {s['ttft_ms']:.0f} ms (cached {s['cached_tokens']}): "
        f"{prefix['speedup']:.1f}x"
    )
    if args.json:
        print(json.dumps({"throughput": runs, "prefix": prefix}))


if __name__ == "__main__":
    main()

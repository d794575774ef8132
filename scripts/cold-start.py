#!/usr/bin/env python3
"""Cold start of `kiln run`: from process start to the first generated token.

Runs `kiln run -m MODEL -p PROMPT -n 1 --temp 0 --json` REPS times with the model file in
the page cache (warm) and REPS times after evicting it (cold: posix_fadvise DONTNEED, which
needs no privileges and drops the file's clean pages that no process maps; the cold runs
use a private copy of the model, so that another process mapping it cannot keep it
cached), and prints, per case, the minimum and median of:
  - startup_ms: from the start of main to the first token, as kiln reports it;
  - wall_ms: the whole process, exec to exit, measured here (an upper bound);
  - load_ms / compile_ms / ttft_ms: model load, plan + backend load, prefill to token.

    scripts/cold-start.py [--kiln target/release/kiln] [--model M] [--reps 10]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import time


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_pages(path):
    """The file's pages in the page cache, as `fincore` reports them (None without it)."""
    try:
        out = subprocess.run(
            ["fincore", "--noheadings", "--output", "PAGES", path],
            capture_output=True, text=True, check=True,
        )
        return int(out.stdout.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def run_once(kiln, model, prompt):
    start = time.perf_counter()
    out = subprocess.run(
        [kiln, "run", "-m", model, "-p", prompt, "-n", "1", "--temp", "0", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall_ms = (time.perf_counter() - start) * 1e3
    v = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "wall_ms": wall_ms,
        "startup_ms": v["startup_ms"],
        "load_ms": v["load_ms"],
        "compile_ms": v["compile_ms"],
        "ttft_ms": v["ttft_ms"],
        "peak_rss_mib": v["peak_rss_bytes"] / 2**20,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()

    run_once(args.kiln, args.model, args.prompt)  # page the binary and model in
    copy = os.path.join("target", "cold-start-model.gguf")
    shutil.copyfile(args.model, copy)
    evict(copy)
    left = resident_pages(copy)
    if left is not None:
        print(f"(cold: {left} pages of the model copy still cached after eviction)\n")
    keys = ["startup_ms", "wall_ms", "load_ms", "compile_ms", "ttft_ms", "peak_rss_mib"]
    print("| case | " + " | ".join(f"{k} (min / median)" for k in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for case in ["warm", "cold"]:
        rows = []
        for _ in range(args.reps):
            model = args.model
            if case == "cold":
                model = copy
                evict(copy)
            rows.append(run_once(args.kiln, model, args.prompt))
        cells = []
        for k in keys:
            vals = [r[k] for r in rows]
            cells.append(f"{min(vals):.1f} / {statistics.median(vals):.1f}")
        print(f"| {case} | " + " | ".join(cells) + " |")
    os.remove(copy)


if __name__ == "__main__":
    main()

//! `kiln bench`: prefill and decode throughput in llama-bench's vocabulary (depth
//! included), plus a per-kernel table against the ceilings the backend measures.

use std::path::PathBuf;

use kiln_engine::Error;
use kiln_engine::compiled::{CompileOptions, Compiled};

use kiln_tools::bench::speculative::{COPY_TASKS, SpecResult, compare};
use kiln_tools::bench::{self, KernelTimes, TestResult};
use serde_json::json;

use crate::args::DeviceArgs;
use crate::common::{kv_dtype, load_model, memory_json, open_backend, print_json};
use crate::speculative::{SpecArgs, stats_json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt sizes of the prefill tests, comma-separated (0: no prefill test)
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Generated tokens of the decode tests, comma-separated (0: no decode test)
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Sequences decoded together, comma-separated (one decode test each)
    #[arg(
        short = 'b',
        long = "batch",
        value_delimiter = ',',
        default_value = "1"
    )]
    batch: Vec<usize>,
    /// Tokens already in each sequence's KV cache before a test, comma-separated (llama-bench's -d)
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    depth: Vec<usize>,
    /// How decode steps hand back their tokens, comma-separated (one decode test each):
    /// 0 the logits, argmax on the host (llama-bench's work); 1 the backend's argmax
    /// (greedy); k > 1 each row's top k (sampling with a top-k filter)
    #[arg(long = "top-k", value_delimiter = ',', default_value = "0")]
    top_k: Vec<usize>,
    /// Repetitions of each test, after one warm-up
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    #[command(flatten)]
    device: DeviceArgs,
    /// Also print the per-kernel table of a decode step, against the device's measured ceilings
    #[arg(long)]
    kernels: bool,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    json: bool,
    /// With --lookup or --draft: also generate the built-in copy-heavy tasks greedily,
    /// plain and speculative side by side (-n tokens each, the first of -n).
    #[command(flatten)]
    spec: SpecArgs,
}

pub fn main(args: Args) -> Result<(), Error> {
    let model = load_model(&args.model)?;
    let device = open_backend(args.device.backend, "bench runs compiled backends, not ref")?;
    let kv = kv_dtype(args.device.kv);
    let max_prompt = args.n_prompt.iter().copied().max().unwrap_or(0);
    let max_gen = args.n_gen.iter().copied().max().unwrap_or(0);
    let max_batch = args.batch.iter().copied().max().unwrap_or(1).max(1);
    let max_depth = args.depth.iter().copied().max().unwrap_or(0);
    let spec = args.spec.config()?;
    let draft_model = args.spec.load_draft(&model)?;
    // Room for the copy tasks' prompts too.
    let spec_ctx = if spec.is_some() { 1024 + max_gen } else { 0 };
    let longest = max_depth + max_prompt.max(max_gen) + 1;
    if longest > model.config.context_length {
        return Err(Error::Invalid(format!(
            "a depth of {max_depth} and tests of up to {} tokens need {longest} positions; the model was trained for {}",
            max_prompt.max(max_gen),
            model.config.context_length
        )));
    }
    let n_ctx = (longest + spec_ctx).min(model.config.context_length);
    let mut options = CompileOptions::new(n_ctx);
    options.kv_dtype = kv;
    options.max_seqs = max_batch;
    // The copy tasks' prompts and verification steps want steps of many tokens too.
    let spec_tokens = if spec.is_some() { 512 } else { 0 };
    options.max_step_tokens = max_prompt.max(spec_tokens).clamp(max_batch, 512);
    options.max_step_outputs = max_batch.max(spec.map_or(1, |s| s.step_outputs()));
    options.mem_budget_bytes = args.device.mem_budget;
    options.kv_budget_bytes = args.device.kv_budget;
    let mut compiled = Compiled::new(&model, device, options)?;
    let backend = compiled.backend().name();

    let mut results: Vec<TestResult> = Vec::new();
    let mut kernels = KernelTimes::new(kv);
    for &d in &args.depth {
        for &p in args.n_prompt.iter().filter(|&&p| p > 0) {
            results.push(bench::prefill(&mut compiled, p, d, args.reps)?);
        }
        for &n in args.n_gen.iter().filter(|&&n| n > 0) {
            for (&b, &k) in args
                .batch
                .iter()
                .flat_map(|b| args.top_k.iter().map(move |k| (b, k)))
            {
                results.push(bench::decode(
                    &mut compiled,
                    n,
                    b.max(1),
                    d,
                    args.reps,
                    bench::Pick::from_top_k(k),
                    &mut kernels,
                )?);
            }
        }
    }
    let mut spec_results: Vec<SpecResult> = Vec::new();
    if let Some(config) = &spec {
        let mut drafter = args
            .spec
            .drafter(draft_model.as_ref(), &args.device, n_ctx)?
            .ok_or_else(|| Error::Invalid("no drafter".into()))?;
        let n_gen = args
            .n_gen
            .first()
            .copied()
            .filter(|&n| n > 0)
            .unwrap_or(128);
        for task in &COPY_TASKS {
            spec_results.push(compare(
                &mut compiled,
                &model.tokenizer,
                drafter.as_mut(),
                config,
                task,
                n_gen,
                args.reps,
            )?);
        }
    }
    let peak_rss = bench::peak_rss_bytes();
    // Measured after the tests, so their figures are not disturbed.
    let ceilings = if args.kernels {
        compiled.backend().ceilings()?
    } else {
        None
    };

    println!("| model | backend | kv | test | batch | t/s | ttft ms | itl p50 ms | itl p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let name = args
        .model
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for r in &results {
        println!(
            "| {name} | {backend} | {} | {} | {} | {:.2} ± {:.2} | {} | {} | {} |",
            kv.name(),
            r.test,
            r.batch,
            r.tok_s.mean,
            r.tok_s.std,
            ms(r.ttft_ms),
            ms(r.itl_p50_ms),
            ms(r.itl_p99_ms)
        );
    }
    if !spec_results.is_empty() {
        println!(
            "\n| task | method | K max | tokens | plain t/s | speculative t/s | speed-up | kept | tokens/step | t/s without drafting | identical |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &spec_results {
            println!(
                "| {} | {} | {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2}× | {:.1}% | {:.2} | {:.2} | {} |",
                r.task,
                r.method,
                r.k_max,
                r.tokens,
                r.plain.mean,
                r.plain.std,
                r.speculative.mean,
                r.speculative.std,
                r.speedup(),
                100.0 * r.stats.acceptance_rate(),
                r.stats.tokens_per_step(),
                r.verify_tok_s(),
                r.identical
            );
        }
    }
    if let Some(rss) = peak_rss {
        println!(
            "\npeak resident memory: {:.1} MiB",
            rss as f64 / (1 << 20) as f64
        );
    }
    let mem = compiled.memory();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "engine allocations: {:.1} MiB (arena {:.1}, KV {:.1} in {} pages, buffers {:.1}); weights {:.1} MiB mapped{}",
        mib(mem.total_bytes()),
        mib(mem.arena_bytes),
        mib(mem.kv_bytes()),
        mem.kv_pages,
        mib(mem.backend_bytes + mem.host_bytes),
        mib(mem.weights_mapped_bytes),
        mem.budget_bytes
            .map_or_else(String::new, |b| format!(", budget {:.1} MiB", mib(b)))
    );
    let rows = kernels.rows();
    if args.kernels {
        let (bw, peak) = match &ceilings {
            Some(c) => {
                println!(
                    "\nceilings of the device: copy {:.1} GB/s (read+write), {} {:.1} GFLOP/s",
                    c.copy_bytes_per_s / 1e9,
                    c.matmul_what,
                    c.matmul_flop_per_s / 1e9
                );
                (Some(c.copy_bytes_per_s), Some(c.matmul_flop_per_s))
            }
            None => {
                println!("\nceilings: the {backend} backend does not measure them");
                (None, None)
            }
        };
        let pct = |v: f64, ceiling: Option<f64>| {
            ceiling.map_or_else(|| "-".to_string(), |c| format!("{:.0}%", 100.0 * v / c))
        };
        println!("(bytes: weights read, and the KV cache attention reads at the steps' depth)");
        println!(
            "\n| kernel | launches/step | µs/step | GB/s | % copy bw | GFLOP/s | % matmul peak |"
        );
        println!("|---|---|---|---|---|---|---|");
        for k in &rows {
            println!(
                "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {} |",
                k.kernel,
                k.launches_per_step,
                k.seconds_per_step * 1e6,
                k.gb_s(),
                pct(k.gb_s() * 1e9, bw),
                k.tflop_s() * 1e3,
                pct(k.tflop_s() * 1e12, peak),
            );
        }
    }
    if args.json {
        print_json(&json!({
            "model": name,
            "backend": backend,
            "kv": kv.name(),
            "results": results.iter().map(|r| json!({
                "test": r.test, "batch": r.batch, "tok_s": r.tok_s.mean, "tok_s_std": r.tok_s.std,
                "ttft_ms": r.ttft_ms, "itl_p50_ms": r.itl_p50_ms, "itl_p99_ms": r.itl_p99_ms,
            })).collect::<Vec<_>>(),
            "speculative": spec.map(|config| spec_results.iter().map(|r| json!({
                "task": r.task, "prompt_tokens": r.prompt_tokens, "tokens": r.tokens,
                "plain_tok_s": r.plain.mean, "plain_tok_s_std": r.plain.std,
                "speculative_tok_s": r.speculative.mean,
                "speculative_tok_s_std": r.speculative.std,
                "speedup": r.speedup(), "identical": r.identical,
                "verify_only_tok_s": r.verify_tok_s(),
                "stats": stats_json(&args.spec, &config, &r.stats),
            })).collect::<Vec<_>>()),
            "peak_rss_bytes": peak_rss,
            "memory": memory_json(Some(compiled.memory())),
            "copy_bandwidth_bytes_s": ceilings.as_ref().map(|c| c.copy_bytes_per_s),
            "matmul_peak_flop_s": ceilings.as_ref().map(|c| c.matmul_flop_per_s),
            "matmul_peak_what": ceilings.as_ref().map(|c| c.matmul_what.clone()),
            "kernels": rows.iter().map(|k| json!({
                "kernel": k.kernel, "launches_per_step": k.launches_per_step,
                "seconds_per_step": k.seconds_per_step, "bytes_per_step": k.bytes_per_step,
                "flops_per_step": k.flops_per_step,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(())
}

//! `kiln run`: stream a continuation of a prompt.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use kiln_engine::Error;
use kiln_engine::driver::{GenerateRequest, generate};
use kiln_engine::sampler::SamplerConfig;
use kiln_engine::speculative;
use kiln_engine::tokenizer::{ChatMessage, render_chat};
use serde_json::json;

use crate::common::{
    BackendArg, KvArg, backend_help, load_model, memory_json, ms_since_start, parse_backend,
    parse_bytes, print_json, runner,
};
use crate::speculative::{SpecArgs, stats_json, stats_line};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt text (special tokens such as <|im_start|> are recognised).
    #[arg(short, long)]
    prompt: String,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// RNG seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, value_parser = parse_backend, help = backend_help())]
    backend: Option<BackendArg>,
    /// KV cache storage of backends with a paged cache.
    #[arg(long, value_enum)]
    kv: Option<KvArg>,
    /// Bytes the KV page pool may take (default: room for the whole context).
    #[arg(long, value_parser = parse_bytes)]
    kv_budget: Option<usize>,
    /// Bytes the engine may allocate in all (arena, KV pool, buffers; K/M/G suffixes):
    /// the KV pool takes what is left, and a model that cannot fit is refused up front.
    /// Mapped weights are not counted.
    #[arg(long, value_parser = parse_bytes)]
    mem_budget: Option<usize>,
    /// Context size (default: the model's).
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
    /// Generate exactly -n tokens, feeding end-of-generation tokens back like any other.
    #[arg(long)]
    ignore_eos: bool,
    /// Record the K most likely tokens of every distribution drawn from.
    #[arg(long, default_value_t = 0)]
    logprobs: usize,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    spec: SpecArgs,
}

pub fn main(args: Args) -> Result<(), Error> {
    let load_start = Instant::now();
    let model = load_model(&args.model)?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let tok = &model.tokenizer;
    let prompt = if args.chat {
        let messages = [ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        }];
        render_chat(
            tok.chat_template(),
            &messages,
            true,
            tok.token_text(tok.bos()),
            tok.token_text(tok.eos()),
        )?
    } else {
        args.prompt.clone()
    };
    let prompt_ids = tok.encode(&prompt, true, true);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let request = GenerateRequest {
        prompt_ids: prompt_ids.clone(),
        max_tokens: args.n_predict,
        sampler: SamplerConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            seed,
        },
        ignore_eos: args.ignore_eos,
        logprobs: args.logprobs,
    };
    let spec = args.spec.config()?;
    let draft_model = args.spec.load_draft(&model)?;
    let compile_start = Instant::now();
    let mut runner = runner(
        &model,
        args.backend,
        args.kv,
        args.kv_budget,
        args.mem_budget,
        args.ctx_size,
        spec.map_or(1, |s| s.step_outputs()),
    )?;
    let mut drafter =
        args.spec
            .drafter(draft_model.as_ref(), args.backend, args.kv, args.ctx_size)?;
    let compile_ms = compile_start.elapsed().as_secs_f64() * 1e3;
    let backend = runner.name();
    let mut stdout = std::io::stdout().lock();
    let mut first_token_at = None;
    let on_token = |event: kiln_engine::driver::TokenEvent<'_>| {
        first_token_at.get_or_insert_with(Instant::now);
        let _ = stdout.write_all(event.text.as_bytes());
        let _ = stdout.flush();
        true
    };
    let (generation, spec_stats) = match (spec, drafter.as_deref_mut()) {
        (Some(config), Some(drafter)) => {
            let (g, stats) =
                speculative::generate(runner.as_mut(), drafter, &config, tok, &request, on_token)?;
            (g, Some((config, stats)))
        }
        _ => (generate(runner.as_mut(), tok, &request, on_token)?, None),
    };
    let _ = writeln!(stdout);
    drop(stdout);
    eprintln!(
        "{} prompt tokens, {} generated ({}), ttft {:.1} ms, prefill {:.1} tok/s, decode {:.1} tok/s [{backend}]",
        generation.prompt_tokens,
        generation.tokens.len(),
        generation.stop_reason.as_str(),
        generation.ttft_ms,
        generation.prefill_tok_s,
        generation.decode_tok_s,
    );
    if let Some((_, stats)) = &spec_stats {
        eprintln!("{}", stats_line(&args.spec, stats));
    }
    if args.json {
        let mut obj = json!({
            "prompt_tokens": generation.prompt_tokens,
            "prompt_ids": prompt_ids,
            "tokens": generation.tokens,
            "n_tokens": generation.tokens.len(),
            "text": generation.text,
            "stop_reason": generation.stop_reason.as_str(),
            "ttft_ms": generation.ttft_ms,
            "prefill_tok_s": generation.prefill_tok_s,
            "decode_tok_s": generation.decode_tok_s,
            "backend": backend,
            "seed": seed,
            "load_ms": load_ms,
            "compile_ms": compile_ms,
            "startup_ms": first_token_at.map(ms_since_start),
            "peak_rss_bytes": kiln_engine::memory::resident().map(|r| r.peak_bytes),
            "memory": memory_json(runner.memory()),
        });
        if let Some((config, stats)) = &spec_stats {
            obj["speculative"] = stats_json(&args.spec, config, stats);
        }
        if args.logprobs > 0 {
            obj["logprobs"] = json!(
                generation
                    .logprobs
                    .iter()
                    .map(|top| top
                        .iter()
                        .map(|&(id, lp)| json!([id, lp]))
                        .collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            );
        }
        print_json(&obj);
    }
    Ok(())
}

//! `kiln run`: stream a continuation of a prompt.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use kiln_engine::Error;
use kiln_engine::driver::{GenerateRequest, TokenMask, generate, generate_masked};
use kiln_engine::sampler::Sampler;
use kiln_engine::speculative;
use kiln_engine::tokenizer::ChatMessage;
use serde_json::json;

use crate::args::{DeviceArgs, SamplingArgs, text_input};
use crate::chat::Chat;
use crate::common::{
    context_size, load_model, memory_json, ms_since_start, print_json, runner, runner_with_steps,
};
use crate::speculative::{SpecArgs, stats_json, stats_line};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt text; special tokens such as <|im_start|> are recognised
    #[arg(short, long)]
    prompt: Option<String>,
    /// Read the prompt from a file (- for standard input)
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Wrap the prompt as one user message in the model's chat template; without a
    /// prompt, start an interactive chat (as `kiln chat`)
    #[arg(long)]
    chat: bool,
    /// Tokens to generate at most
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    /// Context size in tokens [default: the model's]
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
    /// Tokens of the prompt one step carries (longer prompts run in chunks of this size)
    #[arg(long, default_value_t = crate::common::DEFAULT_STEP_TOKENS)]
    step_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Generate exactly -n tokens, feeding end-of-generation tokens back like any other
    #[arg(long)]
    ignore_eos: bool,
    /// Record the K most likely tokens of every distribution drawn from (--json shows them)
    #[arg(long, default_value_t = 0)]
    logprobs: usize,
    /// Do not echo the prompt before the generated text
    #[arg(long)]
    no_echo: bool,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    spec: SpecArgs,
    /// Constrain the output to the JSON schema in FILE
    #[cfg(feature = "structured")]
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    json_schema: Option<PathBuf>,
    /// Constrain the output to the Lark grammar in FILE (llguidance's dialect)
    #[cfg(feature = "structured")]
    #[arg(long, value_name = "FILE")]
    grammar: Option<PathBuf>,
}

pub fn main(args: Args) -> Result<(), Error> {
    let load_start = Instant::now();
    // Bad sampling flags fail before anything is loaded or printed.
    Sampler::new(args.sampling.config())?;
    let text = text_input(args.prompt.as_deref(), args.file.as_ref())?;
    let model = load_model(&args.model)?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let n_ctx = context_size(&model, args.ctx_size)?;
    let Some(text) = text else {
        if args.chat {
            let runner = runner(&model, &args.device, n_ctx, 1)?;
            let mut chat = Chat::new(&model, runner, args.sampling.config(), args.n_predict);
            return chat.interact().map(|_| ());
        }
        return Err(Error::Invalid(
            "no prompt: give -p TEXT, -f FILE (- for standard input), or --chat for a conversation"
                .into(),
        ));
    };
    let tok = &model.tokenizer;
    let prompt = if args.chat {
        tok.apply_chat_template(&[ChatMessage::new("user", text.as_str())], true)?
    } else {
        text.clone()
    };
    let prompt_ids = tok.encode(&prompt, true, true);
    let sampler = args.sampling.config();
    let seed = sampler.seed;
    let request = GenerateRequest {
        prompt_ids: prompt_ids.clone(),
        max_tokens: args.n_predict,
        sampler,
        ignore_eos: args.ignore_eos,
        logprobs: args.logprobs,
    };
    let spec = args.spec.config()?;
    #[cfg(feature = "structured")]
    let mut mask: Option<Box<dyn TokenMask>> =
        crate::structured::load(tok, args.json_schema.as_deref(), args.grammar.as_deref())?
            .map(|m| Box::new(m) as Box<dyn TokenMask>);
    #[cfg(not(feature = "structured"))]
    let mut mask: Option<Box<dyn TokenMask>> = None;
    if mask.is_some() && spec.is_some() {
        return Err(Error::Invalid(
            "--json-schema and --grammar do not combine with --lookup or --draft".into(),
        ));
    }
    let draft_model = args.spec.load_draft(&model)?;
    let compile_start = Instant::now();
    if args.step_tokens == 0 {
        return Err(Error::Invalid("--step-tokens must be at least 1".into()));
    }
    let mut runner = runner_with_steps(
        &model,
        &args.device,
        n_ctx,
        spec.map_or(1, |s| s.step_outputs()),
        args.step_tokens,
    )?;
    let mut drafter = args
        .spec
        .drafter(draft_model.as_ref(), &args.device, n_ctx)?;
    let compile_ms = compile_start.elapsed().as_secs_f64() * 1e3;
    let backend = runner.name();
    let mut stdout = std::io::stdout().lock();
    // The prompt first, as llama.cpp's programs print it (the JSON object, with --json,
    // still comes last).
    if !args.no_echo && !args.chat {
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
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
        _ => match mask.as_deref_mut() {
            Some(mask) => (
                generate_masked(runner.as_mut(), tok, &request, mask, on_token)?,
                None,
            ),
            None => (generate(runner.as_mut(), tok, &request, on_token)?, None),
        },
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

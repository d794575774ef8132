//! `kiln synth`: a random-weight GGUF model of a known shape, for benchmarks without
//! downloads. Progress goes to stderr; `--json` prints the summary as the last stdout line.

use std::path::PathBuf;
use std::time::Instant;

use kiln_engine::Error;
use kiln_tools::synth::{
    self, CUSTOM, CUSTOM_DEFAULT_CONTEXT, Shape, SynthConfig, SynthError, quant_name,
};
use serde_json::json;

use crate::common::print_json;
use crate::progress;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model shape.
    #[arg(long, help = format!("Model shape: {}", synth::shape_names()))]
    shape: String,
    /// Storage of the weight matrices: Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K or F16
    /// (any case).
    #[arg(long)]
    quant: String,
    /// Seed of the random weights; the same seed gives the same file.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// GGUF model whose tokenizer (every `tokenizer.*` key) is copied.
    #[arg(long, default_value = synth::DEFAULT_TOKENIZER_MODEL)]
    tokenizer_from: PathBuf,
    /// Output GGUF file.
    #[arg(short, long)]
    output: PathBuf,
    /// Jinja chat template file written as `tokenizer.chat_template` [default: the tokenizer model's]
    #[arg(long, value_name = "FILE")]
    chat_template: Option<PathBuf>,
    /// custom: number of transformer blocks.
    #[arg(long)]
    layers: Option<usize>,
    /// custom: width of the residual stream.
    #[arg(long)]
    dim: Option<usize>,
    /// custom: query heads.
    #[arg(long)]
    heads: Option<usize>,
    /// custom: KV heads.
    #[arg(long)]
    kv_heads: Option<usize>,
    /// custom: FFN width.
    #[arg(long)]
    ffn: Option<usize>,
    /// custom: context length [default: 4096].
    #[arg(long)]
    ctx: Option<usize>,
    /// custom: vocabulary size; must equal the tokenizer's [default: the tokenizer's].
    #[arg(long)]
    vocab: Option<usize>,
    /// custom: architecture, llama, llama3, mistral, qwen2, qwen3 or gemma3 [default: llama]
    #[arg(long)]
    arch: Option<String>,
    /// custom gemma3 or mistral: the sliding window (of five layers of six for gemma3) [default: 512, mistral 4096]
    #[arg(long)]
    window: Option<usize>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    run(args).map_err(|e| Error::Invalid(e.to_string()))
}

fn run(args: Args) -> Result<(), SynthError> {
    let shape = shape_of(&args)?;
    let quant = synth::parse_quant(&args.quant)?;
    let config = SynthConfig {
        shape,
        quant,
        seed: args.seed,
        tokenizer_from: args.tokenizer_from.clone(),
    };
    let chat_template = match &args.chat_template {
        None => None,
        Some(path) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| SynthError::ChatTemplate {
                    path: path.clone(),
                    source,
                })?,
            )
        }
    };
    let tensors = synth::tensors(&shape, quant);
    let params: u64 = tensors.iter().map(|t| t.n_elements()).sum();
    let data: u64 = tensors.iter().map(|t| t.n_bytes()).sum();
    let start = Instant::now();
    let mut next_report = 0u64;
    let bar = progress::bar(0, "synth (bytes)");
    let summary = synth::synthesize_with_template(
        &config,
        chat_template.as_deref(),
        &args.output,
        |p| {
            if next_report == 0 {
                // The first report: inputs are checked and the file is created.
                eprintln!(
                    "synth: {} {} ({} layers, width {}, {} heads / {} KV, FFN {}, vocab {}): {} tensors, {:.1}M parameters, {:.1} MiB of weights -> {}",
                    shape.name,
                    quant_name(quant),
                    shape.n_layers,
                    shape.n_embd,
                    shape.n_heads,
                    shape.n_kv_heads,
                    shape.n_ff,
                    shape.vocab_size,
                    tensors.len(),
                    params as f64 / 1e6,
                    data as f64 / (1 << 20) as f64,
                    args.output.display()
                );
                next_report = 10;
                return;
            }
            if progress::on_terminal() {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
                return;
            }
            let pct = p.bytes_done * 100 / p.bytes_total.max(1);
            if pct >= next_report && pct < 100 {
                eprintln!(
                    "synth: {pct:3}% ({:.1} of {:.1} MiB, tensor {}/{} {}, {:.1} s)",
                    p.bytes_done as f64 / (1 << 20) as f64,
                    p.bytes_total as f64 / (1 << 20) as f64,
                    p.index + 1,
                    p.n_tensors,
                    p.tensor,
                    start.elapsed().as_secs_f64()
                );
                next_report = pct / 10 * 10 + 10;
            }
        },
    )?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "synth: wrote {} ({} bytes, {:.1} MiB) in {seconds:.1} s",
        args.output.display(),
        summary.bytes,
        summary.bytes as f64 / (1 << 20) as f64
    );
    if args.json {
        print_json(&json!({
            "file": args.output.display().to_string(),
            "bytes": summary.bytes,
            "tensors": summary.tensors,
            "params": summary.params,
            "shape": shape.name,
            "quant": quant_name(quant),
            "seconds": seconds,
        }));
    }
    Ok(())
}

/// The shape named by `--shape`, or built from the custom flags.
fn shape_of(args: &Args) -> Result<Shape, SynthError> {
    let custom_flags = [
        ("--layers", args.layers),
        ("--dim", args.dim),
        ("--heads", args.heads),
        ("--kv-heads", args.kv_heads),
        ("--ffn", args.ffn),
        ("--ctx", args.ctx),
        ("--vocab", args.vocab),
        ("--window", args.window),
    ];
    if !args.shape.eq_ignore_ascii_case(CUSTOM) {
        let shape = Shape::named(&args.shape)?;
        let arch_flag = args.arch.as_ref().map(|_| ("--arch", None::<usize>));
        if let Some((flag, _)) = custom_flags
            .iter()
            .find(|(_, v)| v.is_some())
            .or(arch_flag.as_ref())
        {
            return Err(SynthError::BadShape(format!(
                "{flag} only applies to --shape custom ({} has fixed dimensions)",
                shape.name
            )));
        }
        return Ok(shape);
    }
    let missing: Vec<&str> = custom_flags[..5]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(flag, _)| *flag)
        .collect();
    if !missing.is_empty() {
        return Err(SynthError::BadShape(format!(
            "--shape custom needs --layers, --dim, --heads, --kv-heads and --ffn (missing: {})",
            missing.join(", ")
        )));
    }
    let vocab = match args.vocab {
        Some(v) => v,
        None => synth::tokenizer_vocab_size(&args.tokenizer_from)?,
    };
    let shape = Shape::custom(
        args.layers.unwrap_or_default(),
        args.dim.unwrap_or_default(),
        args.heads.unwrap_or_default(),
        args.kv_heads.unwrap_or_default(),
        args.ffn.unwrap_or_default(),
        vocab,
        args.ctx.unwrap_or(CUSTOM_DEFAULT_CONTEXT),
    )?;
    let arch = args.arch.as_deref().map(synth::Arch::parse).transpose()?;
    let arch = arch.unwrap_or_default();
    if args.window.is_some() && !arch.has_window() {
        return Err(SynthError::BadShape(
            "--window applies to --arch gemma3 and mistral".into(),
        ));
    }
    let default_window = if arch == synth::Arch::Mistral {
        4096
    } else {
        512
    };
    shape.with_arch(arch, args.window.unwrap_or(default_window))
}

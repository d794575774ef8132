//! `kiln info`: metadata and the tensor table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_engine::Error;
use kiln_engine::gguf::{Gguf, TensorInfo, Value};
use kiln_engine::model::ModelConfig;
use serde_json::json;

use crate::common::print_json;

/// Arrays longer than this are summarised (type and length) rather than listed.
const MAX_LISTED_ARRAY: usize = 32;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    #[arg(short, long)]
    model: PathBuf,
    /// Also list every metadata key (arrays summarised)
    #[arg(long)]
    metadata: bool,
    /// Print one JSON object (config, metadata, tensor table) as the last line of stdout
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    let gguf = Gguf::open(&args.model)?;
    let file_bytes = std::fs::metadata(&args.model).map_or(0, |m| m.len());
    let config = ModelConfig::from_gguf(&gguf).ok();
    let mut tensors: Vec<&TensorInfo> = gguf.tensors().iter().collect();
    tensors.sort_by_key(|t| tensor_order(&t.name));
    // Per type: (tensors, parameters, bytes), largest share first.
    let mut mix: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    for t in &tensors {
        let e = mix.entry(t.dtype.name().to_string()).or_default();
        e.0 += 1;
        e.1 += t.n_elements();
        e.2 += t.n_bytes;
    }
    let total_bytes: u64 = tensors.iter().map(|t| t.n_bytes).sum();
    let n_params: u64 = tensors.iter().map(|t| t.n_elements()).sum();
    if args.json {
        let metadata: serde_json::Map<String, serde_json::Value> = gguf
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect();
        let table: Vec<_> = tensors
            .iter()
            .map(|t| json!({"name": t.name, "type": t.dtype.name(), "dims": t.dims, "offset": t.offset, "bytes": t.n_bytes}))
            .collect();
        let type_counts: BTreeMap<&String, usize> = mix.iter().map(|(k, v)| (k, v.0)).collect();
        print_json(&json!({
            "version": gguf.version,
            "alignment": gguf.alignment,
            "file_bytes": file_bytes,
            "n_tensors": tensors.len(),
            "n_params": n_params,
            "tensor_bytes": total_bytes,
            "bits_per_weight": bits_per_weight(total_bytes, n_params),
            "type_counts": type_counts,
            "config": config.map(|c| json!({
                "arch": c.arch, "n_layers": c.n_layers, "n_embd": c.n_embd, "n_heads": c.n_heads,
                "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim, "n_ff": c.n_ff,
                "vocab_size": c.vocab_size, "context_length": c.context_length,
                "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
                "sliding_window": c.sliding_window(),
            })),
            "metadata": metadata,
            "tensors": table,
        }));
        return Ok(());
    }
    let text = |key: &str| gguf.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let arch = text("general.architecture").unwrap_or_else(|| "unknown".into());
    let number = |key: &str| gguf.get(&format!("{arch}.{key}")).and_then(|v| v.as_u64());
    let name = text("general.name").unwrap_or_else(|| {
        args.model
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    });
    println!("{name}");
    println!(
        "  architecture  {arch}{}",
        if config.is_some() {
            ""
        } else {
            " (kiln cannot run it)"
        }
    );
    println!(
        "  size          {} parameters, {} of tensors ({:.2} bits per weight), file {}",
        count(n_params),
        bytes(total_bytes),
        bits_per_weight(total_bytes, n_params),
        bytes(file_bytes)
    );
    let shape = [
        ("layers", number("block_count")),
        ("width", number("embedding_length")),
        ("heads", number("attention.head_count")),
        ("KV heads", number("attention.head_count_kv")),
        ("FFN", number("feed_forward_length")),
    ];
    let shape: Vec<String> = shape
        .iter()
        .filter_map(|(what, n)| n.map(|n| format!("{n} {what}")))
        .collect();
    if !shape.is_empty() {
        println!("  shape         {}", shape.join(", "));
    }
    if let Some(ctx) = number("context_length") {
        println!("  context       {ctx} tokens (trained)");
    }
    let vocab = gguf
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .map(<[Value]>::len);
    let tokenizer = text("tokenizer.ggml.model").unwrap_or_else(|| "none".into());
    let pre =
        text("tokenizer.ggml.pre").map_or_else(String::new, |p| format!(", pre-tokenizer {p}"));
    match vocab {
        Some(n) => println!("  vocabulary    {n} tokens ({tokenizer}{pre})"),
        None => println!("  vocabulary    none in the file"),
    }
    println!(
        "  chat template {}",
        if gguf.get("tokenizer.chat_template").is_some() {
            "yes (the model's own)"
        } else if has_gemma_turns(&gguf) {
            "no (kiln writes Gemma's turns, which the vocabulary has)"
        } else {
            "no (kiln falls back to ChatML)"
        }
    );
    let mut by_share: Vec<_> = mix.iter().collect();
    by_share.sort_by(|a, b| b.1.2.cmp(&a.1.2));
    println!(
        "  quant mix     {}",
        by_share
            .iter()
            .map(|(ty, (n, _, b))| format!(
                "{ty} {n} tensor{} {:.0}%",
                if *n == 1 { "" } else { "s" },
                100.0 * *b as f64 / total_bytes.max(1) as f64
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  GGUF          v{}, alignment {}",
        gguf.version, gguf.alignment
    );
    if args.metadata {
        println!("\nmetadata:");
        for (k, v) in gguf.metadata() {
            println!("  {k:<44} {}", v.summary());
        }
    }
    println!(
        "\n  {:<34} {:<5} {:>22} {:>12}",
        "tensor", "type", "shape", "bytes"
    );
    for t in &tensors {
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        println!(
            "  {:<34} {:<5} {:>22} {:>12}",
            t.name,
            t.dtype.name(),
            dims.join(" × "),
            t.n_bytes
        );
    }
    Ok(())
}

/// Sort key of a tensor name: the global tensors before the first layer (embeddings) or
/// after the last, layers in numeric order (blk.2 before blk.10).
fn tensor_order(name: &str) -> (u8, u64, String) {
    if let Some(rest) = name.strip_prefix("blk.")
        && let Some((layer, tail)) = rest.split_once('.')
        && let Ok(layer) = layer.parse()
    {
        return (1, layer, tail.to_string());
    }
    let first = name.starts_with("token_embd") || name.starts_with("rope");
    (if first { 0 } else { 2 }, 0, name.to_string())
}

fn bits_per_weight(bytes: u64, params: u64) -> f64 {
    8.0 * bytes as f64 / params.max(1) as f64
}

/// 134.5M, 7.2B
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n => n.to_string(),
    }
}

/// 98.4 MB
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Array(t, items) if items.len() > MAX_LISTED_ARRAY => {
            json!({"array": t.name(), "len": items.len()})
        }
        Value::Array(_, items) => items.iter().map(value_json).collect(),
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::F32(f) => json!(f),
        Value::F64(f) => json!(f),
        other => other
            .as_i64()
            .map_or_else(|| json!(other.as_u64()), |i| json!(i)),
    }
}

/// Whether the vocabulary has Gemma's turn markers: then the tokenizer's built-in chat
/// format is Gemma's rather than ChatML (`Tokenizer::chat_format`).
fn has_gemma_turns(gguf: &Gguf) -> bool {
    let tokens = gguf
        .get("tokenizer.ggml.tokens")
        .and_then(kiln_engine::gguf::Value::as_array)
        .unwrap_or(&[]);
    ["<start_of_turn>", "<end_of_turn>"]
        .iter()
        .all(|m| tokens.iter().any(|t| t.as_str() == Some(*m)))
}

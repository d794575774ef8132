//! `kiln info`: metadata and the tensor table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_engine::Error;
use kiln_engine::gguf::{Gguf, Value};
use kiln_engine::model::ModelConfig;
use serde_json::json;

use crate::common::print_json;

/// Arrays longer than this are summarised (type and length) rather than listed.
const MAX_LISTED_ARRAY: usize = 32;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long)]
    model: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    let gguf = Gguf::open(&args.model)?;
    let config = ModelConfig::from_gguf(&gguf).ok();
    let mut type_counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in gguf.tensors() {
        *type_counts.entry(t.dtype.to_string()).or_default() += 1;
    }
    let total_bytes: u64 = gguf.tensors().iter().map(|t| t.n_bytes).sum();
    let n_params: u64 = gguf.tensors().iter().map(|t| t.n_elements()).sum();
    if args.json {
        let metadata: serde_json::Map<String, serde_json::Value> = gguf
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect();
        let tensors: Vec<_> = gguf
            .tensors()
            .iter()
            .map(|t| json!({"name": t.name, "type": t.dtype.name(), "dims": t.dims, "offset": t.offset, "bytes": t.n_bytes}))
            .collect();
        print_json(&json!({
            "version": gguf.version,
            "alignment": gguf.alignment,
            "n_tensors": gguf.tensors().len(),
            "n_params": n_params,
            "tensor_bytes": total_bytes,
            "type_counts": type_counts,
            "config": config.map(|c| json!({
                "arch": c.arch, "n_layers": c.n_layers, "n_embd": c.n_embd, "n_heads": c.n_heads,
                "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim, "n_ff": c.n_ff,
                "vocab_size": c.vocab_size, "context_length": c.context_length,
                "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
                "sliding_window": c.sliding_window(),
            })),
            "metadata": metadata,
            "tensors": tensors,
        }));
        return Ok(());
    }
    println!(
        "GGUF v{}, alignment {}, {} tensors, {} parameters, {:.2} MiB of tensor data",
        gguf.version,
        gguf.alignment,
        gguf.tensors().len(),
        n_params,
        total_bytes as f64 / (1 << 20) as f64
    );
    println!("tensor types: {type_counts:?}");
    if let Some(c) = &config {
        println!("{c:?}");
    }
    println!("\nmetadata:");
    for (k, v) in gguf.metadata() {
        println!("  {k:<40} {}", v.summary());
    }
    println!("\ntensors:");
    for t in gguf.tensors() {
        println!(
            "  {:<32} {:<5} {:>20} {:>12} bytes",
            t.name,
            t.dtype.name(),
            format!("{:?}", t.dims),
            t.n_bytes
        );
    }
    Ok(())
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

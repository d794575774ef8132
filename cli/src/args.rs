//! Flags several commands share, with one description each (README and `--help` agree:
//! cli/tests/help.rs compares them).

use std::io::Read;
use std::path::PathBuf;

use clap::ValueEnum;
use kiln_engine::Error;
use kiln_engine::sampler::SamplerConfig;

use crate::common::{BackendArg, backend_help, parse_backend, parse_bytes};

/// `--kv`: how the paged KV cache stores keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvArg {
    /// FP8 E4M3 with a scale per (token, KV head): half the bytes of f16.
    Fp8,
    /// IEEE half precision.
    F16,
}

/// Where and how the model runs: `run`, `chat`, `perplexity`, `bench`, `serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    #[arg(long, value_parser = parse_backend, help = backend_help())]
    pub backend: Option<BackendArg>,
    /// KV cache storage of the compiled backends [default: fp8]
    #[arg(long, value_enum)]
    pub kv: Option<KvArg>,
    /// Bytes the KV page pool may take, K/M/G suffixes allowed [default: room for the context]
    #[arg(long, value_parser = parse_bytes)]
    pub kv_budget: Option<usize>,
    /// Bytes the engine may allocate in all (arena, KV pool, buffers; mapped weights not
    /// counted); a model that cannot fit is refused up front [default: no limit]
    #[arg(long, value_parser = parse_bytes)]
    pub mem_budget: Option<usize>,
}

/// How tokens are drawn: `run`, `chat`.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy (always the most likely token)
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep only the K most likely tokens before sampling (0: all)
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probabilities add up to P (1: all)
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0: none)
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Seed of the sampler; the same seed and flags give the same text [default: from the clock]
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The sampler's configuration and the seed it uses.
    pub fn config(&self) -> SamplerConfig {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed,
        }
    }
}

/// The text of `-p TEXT` or `-f FILE` (`-f -`: standard input); None when neither is given.
pub fn text_input(text: Option<&str>, file: Option<&PathBuf>) -> Result<Option<String>, Error> {
    match (text, file) {
        (Some(_), Some(_)) => Err(Error::Invalid(
            "give the text once: as an argument or with -f FILE, not both".into(),
        )),
        (Some(t), None) => Ok(Some(t.to_string())),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Error::Invalid(format!("cannot read standard input: {e}")))?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::Invalid("standard input is not valid UTF-8".into()))
        }
        (None, Some(path)) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::Invalid(format!("{} is not valid UTF-8 text", path.display())))
        }
        (None, None) => Ok(None),
    }
}

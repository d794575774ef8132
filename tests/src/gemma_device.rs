//! Issue 16's end-to-end checks of Gemma 3 270M Q4_K_M on a device backend (the test file
//! of each backend calls them): greedy tokens equal to llama.cpp's recorded ones
//! (`tests/data/reference/gemma3-270m/greedy.json`) for as many tokens as llama.cpp's two
//! settings agree on, and `perplexity -c 128` over gpl-3.txt within 1% of llama.cpp's.
//! The CPU backend runs the same checks in `tests/tests/gemma3_reference.rs`.

use std::time::Instant;

use kiln_engine::compiled::Compiled;
use kiln_engine::kv::KvDtype;
use kiln_engine::model::Model;
use kiln_engine::perplexity::perplexity;
use kiln_ir::backend::Backend;
use serde_json::Value;

use crate::cpu::{common_prefix, greedy_tokens, options, perplexity_options};
use crate::{ids, reference_dir};

/// Relative distance allowed from llama.cpp's perplexity.
pub const PPL_BOUND: f64 = 0.01;

/// `tests/data/reference/gemma3-270m/<name>` parsed as JSON.
pub fn reference(name: &str) -> Value {
    let path = reference_dir("gemma3-270m").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference JSON")
}

/// Greedy decoding of each prompt with an F16 KV cache on a backend from `make`: its
/// tokens must equal llama.cpp's (either setting) for `common_prefix_fa_off_fa_on` tokens,
/// the prefix llama.cpp's own two settings share (past it, near-ties decide), or
/// `max_tokens` where that is fewer, on the first `max_prompts` prompts (lavapipe is
/// slow).
pub fn greedy_matches_llama_cpp(
    name: &str,
    model: &Model,
    make: &dyn Fn() -> Box<dyn Backend>,
    max_prompts: usize,
    max_tokens: usize,
) -> Result<(), String> {
    let mut runner = Compiled::new(model, make(), options(512, KvDtype::F16))
        .map_err(|e| format!("the {name} backend compiles Gemma 3: {e}"))?;
    let mut failures = Vec::new();
    let prompts = reference("greedy.json")["prompts"].clone();
    for p in prompts
        .as_array()
        .expect("prompts")
        .iter()
        .take(max_prompts)
    {
        let prompt = p["name"].as_str().unwrap_or("?");
        let must = (p["common_prefix_fa_off_fa_on"].as_u64().unwrap_or(0) as usize).min(max_tokens);
        let start = Instant::now();
        let ours = greedy_tokens(&mut runner, model, &ids(&p["prompt_ids"]), must);
        let best = ["greedy_ids_fa_off", "greedy_ids_fa_on"]
            .iter()
            .map(|k| common_prefix(&ours, &ids(&p[*k])))
            .max()
            .unwrap_or(0);
        eprintln!(
            "gemma3 greedy, {name} f16 kv, {prompt}: {best} of {must} equal to llama.cpp ({:.1} s)",
            start.elapsed().as_secs_f64()
        );
        if best < must {
            failures.push(format!(
                "{prompt}: {best} tokens equal, {must} required\nours  {ours:?}\nllama {:?}",
                ids(&p["greedy_ids_fa_off"])
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// `kiln perplexity -c 128` with an F16 KV cache on a backend from `make`, over the
/// first `chars` characters of gpl-3.txt (or all of it), within [`PPL_BOUND`] of the CPU
/// backend's over the same text (the CPU backend's over the whole text is within 1% of
/// llama.cpp's: `tests/tests/gemma3_reference.rs`). Returns (ours, the CPU's).
pub fn perplexity_matches_cpu(
    name: &str,
    model: &Model,
    make: &dyn Fn() -> Box<dyn Backend>,
    chars: usize,
) -> Result<(f64, f64), String> {
    let text = std::fs::read_to_string(crate::reference_path("gpl-3.txt"))
        .map_err(|e| format!("gpl-3.txt: {e}"))?;
    let end = text
        .char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i);
    let text = &text[..end];
    let run = |backend: Box<dyn Backend>, label: &str| -> Result<f64, String> {
        let start = Instant::now();
        let options = perplexity_options(128, KvDtype::F16);
        let mut runner = Compiled::new(model, backend, options)
            .map_err(|e| format!("the {label} backend compiles Gemma 3: {e}"))?;
        let ppl = perplexity(&mut runner, &model.tokenizer, text, 128, |_, _, _| {})
            .map_err(|e| e.to_string())?;
        eprintln!(
            "gemma3 perplexity -c 128, {label} f16 kv, first {chars} characters of gpl-3.txt: {:.4} ± {:.4} ({} chunks, {:.0} s)",
            ppl.ppl,
            ppl.ppl_plus_minus,
            ppl.chunks,
            start.elapsed().as_secs_f64()
        );
        Ok(ppl.ppl)
    };
    let ours = run(make(), name)?;
    let cpu = run(Box::new(kiln_backend_cpu::CpuBackend::new()), "cpu")?;
    let rel = ours / cpu - 1.0;
    if rel.abs() > PPL_BOUND {
        return Err(format!(
            "{name}: perplexity {ours:.4} vs the CPU backend's {cpu:.4} ({:+.2}%)",
            rel * 100.0
        ));
    }
    Ok((ours, cpu))
}

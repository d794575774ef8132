//! Perplexity of the CPU backend against the oracle (F16 and FP8 KV at -c 128) and FP8 KV
//! against F16 KV on the whole reference text at -c 512 (issue 3's bound).

use std::time::Instant;

use kiln_engine::kv::KvDtype;
use kiln_engine::perplexity::{perplexity, prepare_text};
use kiln_engine::reference::Reference;
use kiln_tests::cpu::{cpu, load, perplexity_options};
use kiln_tests::reference_path;

// ---------------------------------------------------------------------------------------

/// The text cut at the first line end after `bytes` bytes (every runner gets the same text).
fn gpl_text(bytes: usize) -> String {
    let text = std::fs::read_to_string(reference_path("gpl-3.txt")).unwrap();
    let text = prepare_text(&text);
    let end = text[bytes.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| bytes + i);
    text[..end].to_string()
}

/// Perplexity against the oracle at -c 128: the compute path (Q8 activations, F16 K/V)
/// within half a percent.
const PPL_F16_VS_ORACLE: f64 = 0.005;
/// FP8 K/V (3 mantissa bits) costs perplexity by itself, kernels aside: the oracle with its
/// K/V rounded through FP8 as the cache stores them (per token-head scale) measured +1.0%
/// at -c 512 on this text, +2.0% with Q8 activations too, +2.2% at -c 128; the CPU
/// backend measured +1.3% (c 128, vs the oracle) and +1.2% (c 512, vs F16 K/V).
const PPL_FP8_VS_ORACLE: f64 = 0.025;
/// Issue 3's bound, on the whole reference text at -c 512 (measured +0.89% on
/// 2026-11-22; on the first 4 chunks alone it is +1.2%, so the whole text is needed).
/// Little margin: FP8's cost moves with the order of the attention's f32 sums, since a
/// last-bit change upstream flips FP8 roundings of later K/V. On 2026-12-05 the same
/// model measured +0.85% (a softmax step per key), +1.07% (per block of 32 keys) and
/// +0.56% (per block of 16, the kernel now); the F16 perplexity moved by 0.07% only.
const PPL_FP8_VS_F16: f64 = 0.01;

#[test]
fn perplexity_at_context_128_is_close_to_the_oracle() {
    let model = load();
    let start = Instant::now();
    // About 2000 tokens: 15 chunks of 128.
    let text = gpl_text(9300);
    let mut oracle = Reference::new(&model, 128);
    let theirs = perplexity(&mut oracle, &model.tokenizer, &text, 128, |_, _, _| {}).unwrap();
    eprintln!(
        "perplexity c=128, {} chunks, {} scored: oracle {:.4} ({:.1} s)",
        theirs.chunks,
        theirs.scored,
        theirs.ppl,
        start.elapsed().as_secs_f64()
    );
    for (kv, bound) in [
        (KvDtype::F16, PPL_F16_VS_ORACLE),
        (KvDtype::F8E4M3, PPL_FP8_VS_ORACLE),
    ] {
        let t = Instant::now();
        let mut runner = cpu(&model, perplexity_options(128, kv));
        let ours = perplexity(&mut runner, &model.tokenizer, &text, 128, |_, _, _| {}).unwrap();
        assert_eq!((ours.chunks, ours.scored), (theirs.chunks, theirs.scored));
        let rel = (ours.ppl - theirs.ppl).abs() / theirs.ppl;
        eprintln!(
            "perplexity c=128: cpu kv {} {:.4} vs oracle {:.4}: {:+.3}% (bound {:.1}%; {:.1} s)",
            kv.name(),
            ours.ppl,
            theirs.ppl,
            (ours.ppl / theirs.ppl - 1.0) * 100.0,
            bound * 100.0,
            t.elapsed().as_secs_f64()
        );
        assert!(
            rel < bound,
            "kv {}: perplexity {} vs oracle {}",
            kv.name(),
            ours.ppl,
            theirs.ppl
        );
    }
}

#[test]
fn fp8_kv_perplexity_at_context_512_is_close_to_f16_kv() {
    let model = load();
    // The whole reference text: 14 chunks of 512.
    let text = gpl_text(usize::MAX);
    let mut results = Vec::new();
    for kv in [KvDtype::F16, KvDtype::F8E4M3] {
        let t = Instant::now();
        let mut runner = cpu(&model, perplexity_options(512, kv));
        let p = perplexity(&mut runner, &model.tokenizer, &text, 512, |_, _, _| {}).unwrap();
        eprintln!(
            "perplexity c=512, {} chunks, {} scored: cpu kv {} {:.4} ± {:.4} ({:.1} s)",
            p.chunks,
            p.scored,
            kv.name(),
            p.ppl,
            p.ppl_plus_minus,
            t.elapsed().as_secs_f64()
        );
        results.push(p.ppl);
    }
    let rel = (results[1] - results[0]).abs() / results[0];
    eprintln!(
        "perplexity c=512: fp8 {:.4} vs f16 {:.4}: {:+.3}% (bound {:.1}%)",
        results[1],
        results[0],
        (results[1] / results[0] - 1.0) * 100.0,
        PPL_FP8_VS_F16 * 100.0
    );
    assert!(
        rel < PPL_FP8_VS_F16,
        "fp8 {} vs f16 {}",
        results[1],
        results[0]
    );
}

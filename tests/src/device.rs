//! The end-to-end checks each device backend's test file runs
//! (`tests/tests/<backend>_backend.rs`): greedy decoding of the reference model against
//! the CPU backend, per-launch timers. (The backends have no user buffers to check: the
//! Backend trait has none, ir/src/backend.rs says why.)
//!
//! The logits are held to the f32 oracle (`Reference`), not to the CPU backend: the CPU
//! backend quantizes activations to 8 bits before the quantized matmuls (as llama.cpp
//! does; NMSE up to 1.3e-2 from the oracle), while the GPU kernels keep them in f32 (or
//! f16 on tensor cores), so mostly the KV cache's rounding separates them from the
//! oracle.

use std::time::Instant;

use kiln_engine::compiled::Compiled;
use kiln_engine::kv::KvDtype;
use kiln_engine::model::Model;
use kiln_engine::reference::Reference;
use kiln_engine::runner::{LogitsFor, Runner};
use kiln_engine::sampler::argmax;
use kiln_ir::backend::Backend;

use crate::cpu::{cpu, options};

/// Below this top-two logit gap (of the CPU backend) the greedy choice is a near-tie.
pub const MIN_GAP: f32 = 0.5;

/// What a backend's greedy test runs.
#[derive(Debug)]
pub struct Greedy<'a> {
    /// The backend's name, for messages.
    pub name: &'a str,
    pub prompt: &'a str,
    pub n_ctx: usize,
    /// Decoded tokens per KV type.
    pub tokens: usize,
    /// Logits of a step against the oracle's: (NMSE, largest difference relative to the
    /// largest logit) allowed per KV type.
    pub limits: fn(KvDtype) -> (f64, f64),
}

/// Decodes `check.prompt` greedily with FP8 and F16 KV on a backend from `make`, the CPU
/// backend and the oracle, all fed the CPU backend's tokens: the backend must pick the
/// CPU backend's token at every step up to the first near-tie, and its logits stay
/// within the limits of the oracle's.
pub fn greedy_matches_cpu(model: &Model, check: &Greedy<'_>, make: &dyn Fn() -> Box<dyn Backend>) {
    let ids = model.tokenizer.encode(check.prompt, true, true);
    let name = check.name;
    for kv in [KvDtype::F8E4M3, KvDtype::F16] {
        let (max_nmse, max_rel) = (check.limits)(kv);
        let start = Instant::now();
        let backend = make();
        let device = backend.properties().name.clone();
        let mut gpu = Compiled::new(model, backend, options(check.n_ctx, kv))
            .unwrap_or_else(|e| panic!("the {name} backend compiles the model: {e}"));
        let mut reference = cpu(model, options(check.n_ctx, kv));
        let mut oracle = Reference::new(model, check.n_ctx);
        let mut exact = oracle.forward(&ids, LogitsFor::Last).unwrap();
        let mut theirs = reference.forward(&ids, LogitsFor::Last).unwrap();
        let mut ours = gpu.forward(&ids, LogitsFor::Last).unwrap();
        let mut parted = None;
        let mut worst = (0.0f64, 0.0f64);
        let mut tokens = Vec::new();
        for step in 0..check.tokens {
            let (nmse, rel) = error(&ours, &exact);
            worst = (worst.0.max(nmse), worst.1.max(rel));
            let t = argmax(&theirs);
            tokens.push(t);
            if parted.is_none() && top2_gap(&theirs) < MIN_GAP {
                parted = Some(check.tokens); // a near-tie: the order past it is not checked
            }
            if parted.is_none() && argmax(&ours) != t {
                parted = Some(step);
            }
            assert!(
                parted != Some(step),
                "kv {kv}, step {step}: {name} picks {} where the CPU backend picks {t} (gap {})",
                argmax(&ours),
                top2_gap(&theirs)
            );
            theirs = reference.forward(&[t], LogitsFor::Last).unwrap();
            ours = gpu.forward(&[t], LogitsFor::Last).unwrap();
            exact = oracle.forward(&[t], LogitsFor::Last).unwrap();
        }
        eprintln!(
            "{name} on {device}, kv {kv}: tokens {tokens:?} ({:?}) as the CPU backend's; logits vs the oracle: NMSE {:.2e}, max rel {:.2e} (limits {max_nmse:.0e}, {max_rel}); {:.1} s",
            model.tokenizer.decode(&tokens),
            worst.0,
            worst.1,
            start.elapsed().as_secs_f64()
        );
        assert!(
            worst.0 <= max_nmse && worst.1 <= max_rel,
            "kv {kv}: logits NMSE {:.2e}, max rel {:.2e}",
            worst.0,
            worst.1
        );
    }
}

/// The limits of the WGSL kernels (wgpu and Vulkan run the same ones): logits of a step
/// against the oracle's, (NMSE, largest difference relative to the largest logit), per KV
/// type. Measured on lavapipe 1.5e-6 / 6.5e-4 with F16 and 4.6e-3 / 4.5e-2 with FP8 (FP8
/// K/V alone moves the oracle this much); headroom, since a wrong kernel moves logits by
/// their own size.
pub fn wgsl_limits(kv: KvDtype) -> (f64, f64) {
    match kv {
        KvDtype::F16 => (1e-4, 5e-3),
        KvDtype::F8E4M3 => (2e-2, 0.1),
    }
}

/// The gap between the two largest logits.
pub fn top2_gap(logits: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &l in logits {
        if l > first {
            second = first;
            first = l;
        } else if l > second {
            second = l;
        }
    }
    first - second
}

/// (NMSE, max |a - b| / max |b|) of `ours` against `theirs`.
pub fn error(ours: &[f32], theirs: &[f32]) -> (f64, f64) {
    assert!(ours.iter().all(|x| x.is_finite()), "non-finite logits");
    let (mut se, mut ss, mut max_diff, mut max_ref) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in ours.iter().zip(theirs) {
        let (a, b) = (f64::from(a), f64::from(b));
        se += (a - b) * (a - b);
        ss += b * b;
        max_diff = max_diff.max((a - b).abs());
        max_ref = max_ref.max(b.abs());
    }
    (se / ss, max_diff / max_ref)
}

/// After a step, `launch_times` has one finite time per launch, in order.
pub fn check_launch_times(backend: &mut dyn Backend) {
    let times = backend.launch_times().expect("timers are on");
    assert!(!times.is_empty());
    for (i, t) in times.iter().enumerate() {
        assert_eq!(t.launch, i);
        assert!(t.seconds.is_finite() && t.seconds >= 0.0, "{t:?}");
    }
    eprintln!("launch times: {times:?}");
}

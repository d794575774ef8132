//! Gemma 3 on the CPU backend against the reference pass (the oracle), on random-weight
//! models of Gemma 3's architecture (`kiln synth`: QK-norm, sandwich norms, GeGLU, NeoX
//! RoPE with a base per layer, sliding windows on five layers of six, heads of 256 wider
//! than width / heads): logits over prompts three times longer than the window, greedy
//! agreement, every fusion pass against the unfused graph, batched decode against
//! sequences alone, and the sliding-window pages going back to the pool. The real model
//! against llama.cpp is gemma3_reference.rs. Figures are printed (`--nocapture`).
//!
//! The models carry SmolLM2's tokenizer (the vocabulary does not matter here).

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln_engine::compiled::{BatchEntry, CompileOptions};
use kiln_engine::kv::KvDtype;
use kiln_engine::model::Model;
use kiln_engine::perplexity::prepare_text;
use kiln_engine::reference::Reference;
use kiln_engine::runner::{LogitsFor, Runner};
use kiln_engine::sampler::argmax;
use kiln_ir::DType;
use kiln_ir::kv_groups::KvGroups;
use kiln_tests::cpu::{
    LogitsError, check_each_pass, common_prefix, cpu, greedy_rows, greedy_tokens, max_abs_diff,
    options, teacher_forced, top2_gap,
};
use kiln_tests::{reference_model, reference_path};
use kiln_tools::synth::{self, Shape, SynthConfig};

/// The sliding window of the test models: not a multiple of the page size (16), and
/// short enough that the prompts cross it three times.
const WINDOW: usize = 40;
const N_CTX: usize = 512;
const PROMPT_TOKENS: usize = 130;
const DECODE_STEPS: usize = 6;

/// Gemma 3 270M in small: 6 layers (5 window, 1 global), width 256, 2 query heads and 1
/// KV head of 256, FFN 512.
fn shape() -> Shape {
    let custom = Shape::custom(6, 256, 2, 1, 512, 49152, 1024).expect("a valid shape");
    Shape {
        key_length: 256,
        ..custom.gemma3(WINDOW).expect("a valid Gemma shape")
    }
}

/// A synthesized model of [`shape`] with matrices in `quant` (the same bytes every time:
/// the seed is fixed), made once and kept in the target's temporary folder.
fn model_file(quant: DType) -> PathBuf {
    static MADE: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _one_at_a_time = MADE.get_or_init(Default::default).lock().unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("gemma3-synth-w{WINDOW}-{}.gguf", quant.name()));
    if path.exists() {
        return path;
    }
    // Written under this process's name, then renamed: another test run may race us.
    let part = dir.join(format!(
        "gemma3-synth-{}-{}.gguf",
        quant.name(),
        std::process::id()
    ));
    let config = SynthConfig {
        shape: shape(),
        quant,
        seed: 3,
        tokenizer_from: reference_model(),
    };
    synth::synthesize(&config, &part, |_| {}).expect("the Gemma 3 model synthesizes");
    std::fs::rename(&part, &path).expect("the synthesized model moves into place");
    path
}

fn load(quant: DType) -> Model {
    Model::load(model_file(quant)).expect("the synthesized Gemma 3 model loads")
}

/// A prompt of `n` tokens: a stretch of the GPL, from `start`.
fn prompt(model: &Model, start: usize, n: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(reference_path("gpl-3.txt")).unwrap();
    let ids = model
        .tokenizer
        .encode(prepare_text(&text[..8000]), true, false);
    ids[start..start + n].to_vec()
}

// ---------------------------------------------------------------------------------------
// 1. Logits against the oracle, at every prompt position and decode step.
// ---------------------------------------------------------------------------------------

/// Worst rows measured over the prompt's 130 positions and 6 decode steps (Q8_0 weights,
/// so activations are quantized to Q8_0 before each matmul as llama.cpp does; F16 K/V:
/// max|d|/max|ref| 2.8e-2, NMSE 5.8e-4; FP8: 6.9e-2, 4.1e-3; F16 weights, f32
/// activations, F16 K/V: 8.7e-4, 4.1e-7, mostly GELU's f16 roundings), with headroom. A
/// wrong window, RoPE pairing, scale or norm moves the logits by their own size (the
/// oracle without its windows is 0.69 / 0.64 away: `windows_change_the_logits`).
const LIMITS: [(DType, KvDtype, f64, f64); 3] = [
    (DType::Q8_0, KvDtype::F16, 0.06, 2e-3),
    (DType::Q8_0, KvDtype::F8E4M3, 0.15, 1.5e-2),
    (DType::F16, KvDtype::F16, 3e-3, 2e-6),
];

#[test]
fn cpu_logits_match_the_oracle_across_the_window() {
    for (quant, kv, max_rel, nmse) in LIMITS {
        let model = load(quant);
        let ids = prompt(&model, 0, PROMPT_TOKENS);
        let mut oracle = Reference::new(&model, N_CTX);
        let mut runner = cpu(&model, options(N_CTX, kv));
        // Every prompt position, then greedy decode steps fed the oracle's tokens.
        let theirs = oracle.forward(&ids, LogitsFor::From(0)).unwrap();
        let ours = runner.forward(&ids, LogitsFor::From(0)).unwrap();
        let vocab = model.config.vocab_size;
        let rows =
            |all: &[f32]| -> Vec<Vec<f32>> { all.chunks(vocab).map(<[f32]>::to_vec).collect() };
        let (theirs, ours) = (rows(&theirs), rows(&ours));
        let prompt_err = LogitsError::worst(&ours, &theirs);
        let beyond = LogitsError::worst(&ours[WINDOW..], &theirs[WINDOW..]);
        let argmax_same = ours
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        let (oracle_rows, feed) = greedy_rows(&mut oracle, &ids, DECODE_STEPS);
        let decode = teacher_forced(&mut runner, &ids, &feed);
        let decode_err = LogitsError::worst(&decode, &oracle_rows);
        eprintln!(
            "gemma3 synth {quant}, kv {}: prompt rows worst max|d|/max|ref| {:.3e} NMSE {:.3e} \
             (past the window: {:.3e} / {:.3e}), argmax equal at {argmax_same} of {} positions; \
             {DECODE_STEPS} decode steps worst {:.3e} / {:.3e}",
            kv.name(),
            prompt_err.max_rel,
            prompt_err.nmse,
            beyond.max_rel,
            beyond.nmse,
            ids.len(),
            decode_err.max_rel,
            decode_err.nmse
        );
        let worst = prompt_err.max(decode_err);
        assert!(
            worst.max_rel < max_rel && worst.nmse < nmse,
            "{quant}, kv {}: {worst:?} over ({max_rel}, {nmse})",
            kv.name()
        );
    }
}

/// The test above can fail where it matters: the oracle without its windows is far from
/// the oracle with them past the window, and bit-equal before it.
#[test]
fn windows_change_the_logits() {
    let model = load(DType::Q8_0);
    let mut unwindowed = load(DType::Q8_0);
    for layer in &mut unwindowed.config.layers {
        layer.window = None;
    }
    let ids = prompt(&model, 0, PROMPT_TOKENS);
    let vocab = model.config.vocab_size;
    let with = Reference::new(&model, N_CTX)
        .forward(&ids, LogitsFor::From(0))
        .unwrap();
    let without = Reference::new(&unwindowed, N_CTX)
        .forward(&ids, LogitsFor::From(0))
        .unwrap();
    assert_eq!(with[..WINDOW * vocab], without[..WINDOW * vocab]);
    let err = LogitsError::of(&without[WINDOW * vocab..], &with[WINDOW * vocab..]);
    eprintln!(
        "gemma3 synth: the oracle without windows, past the window: max|d|/max|ref| {:.3e} NMSE {:.3e}",
        err.max_rel, err.nmse
    );
    assert!(err.nmse > 0.1, "windows barely matter: {err:?}");
}

// ---------------------------------------------------------------------------------------
// 2. Greedy output with F16 KV equals the oracle's until the oracle itself is unsure.
// ---------------------------------------------------------------------------------------

const GREEDY_TOKENS: usize = 24;
/// Below this top-two logit gap the oracle's choice is within the backend's rounding.
const MIN_GAP: f32 = 0.3;

#[test]
fn greedy_with_f16_kv_matches_the_oracle_until_a_close_call() {
    let model = load(DType::Q8_0);
    let mut oracle = Reference::new(&model, N_CTX);
    let mut runner = cpu(&model, options(N_CTX, KvDtype::F16));
    for start in [0, 300] {
        let ids = prompt(&model, start, 60);
        let (rows, theirs) = greedy_rows(&mut oracle, &ids, GREEDY_TOKENS);
        let theirs = &theirs[..];
        let gaps: Vec<f32> = rows.iter().map(|r| top2_gap(r)).collect();
        let must = gaps
            .iter()
            .position(|&g| g < MIN_GAP)
            .unwrap_or(GREEDY_TOKENS);
        let ours = greedy_tokens(&mut runner, &model, &ids, GREEDY_TOKENS);
        let prefix = common_prefix(&ours, theirs);
        eprintln!(
            "gemma3 synth greedy kv f16, prompt at {start}: common prefix {prefix} of {GREEDY_TOKENS}; \
             the oracle's first gap < {MIN_GAP} at step {must}"
        );
        assert!(
            prefix >= must.min(GREEDY_TOKENS),
            "prompt at {start}: ours {ours:?}\ntheirs {theirs:?}\ngaps {gaps:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. Fusion passes against the unfused graph.
// ---------------------------------------------------------------------------------------

/// Fused and unfused graphs differ only in the order of f32 operations.
const FUSION_MAX_REL: f64 = 1e-4;
/// norm+QKV, QK-norm+RoPE+KV write, attention, output matmul, post-norm+add,
/// norm+gate/up+GeGLU, down matmul, post-norm+add.
const LAUNCHES_PER_LAYER: usize = 8;

#[test]
fn every_fusion_pass_preserves_the_logits() {
    let model = load(DType::Q8_0);
    let ids = prompt(&model, 0, 70);
    let mut oracle = Reference::new(&model, N_CTX);
    let (_, feed) = greedy_rows(&mut oracle, &ids, 3);
    for kv in [KvDtype::F8E4M3, KvDtype::F16] {
        let fused_opts = options(N_CTX, kv);
        let mut fused = cpu(&model, fused_opts);
        let mut unfused = cpu(
            &model,
            CompileOptions {
                fuse: false,
                ..fused_opts
            },
        );
        let kernels: Vec<&str> = fused
            .plan()
            .launches
            .iter()
            .filter(|l| l.layer == Some(0))
            .map(|l| l.kernel.as_str())
            .collect();
        eprintln!("gemma3 fused layer 0: {kernels:?}");
        assert_eq!(fused.plan().launches_per_layer(), LAUNCHES_PER_LAYER);
        let a = teacher_forced(&mut fused, &ids, &feed);
        let b = teacher_forced(&mut unfused, &ids, &feed);
        let err = LogitsError::worst(&a, &b);
        eprintln!(
            "gemma3 fused vs unfused, kv {}: max|d|/max|ref| {:.3e}",
            kv.name(),
            err.max_rel
        );
        assert!(err.max_rel < FUSION_MAX_REL);

        // Each pass alone, and the passes one by one in their composing order.
        for c in check_each_pass(&model, &fused_opts, N_CTX, &ids, &feed, &b) {
            eprintln!(
                "gemma3 pass {:>15}, kv {}: alone fuses {:>2} nodes, max|d|/max|ref| {:.3e}; \
                 chained {:>2}, {:.3e}",
                c.name,
                kv.name(),
                c.n_alone,
                c.err_alone.max_rel,
                c.n_chained,
                c.err_chained.max_rel
            );
            // Gemma has no matmul feeding a residual add (its post-norms sit between).
            if c.name != "residual_add" {
                assert!(
                    c.n_alone > 0 || c.n_chained > 0,
                    "pass {} never fires",
                    c.name
                );
            }
            assert!(c.err_alone.max_rel < FUSION_MAX_REL, "{} alone", c.name);
            assert!(c.err_chained.max_rel < FUSION_MAX_REL, "{} chained", c.name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Batched decode equals each sequence run alone; window pages go back to the pool.
// ---------------------------------------------------------------------------------------

/// Prompts shorter than the window, across it, and past it several times.
const BATCH_LENGTHS: [usize; 4] = [3, 45, 90, 133];
const BATCH_STEPS: usize = 10;
const BATCH_MAX_ABS: f32 = 1e-3;

#[test]
fn batched_decode_equals_each_sequence_alone() {
    let model = load(DType::Q8_0);
    let prompts: Vec<Vec<u32>> = BATCH_LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &n)| prompt(&model, 150 * i, n))
        .collect();
    let vocab = model.config.vocab_size;
    for kv in [KvDtype::F8E4M3, KvDtype::F16] {
        let mut batched = cpu(
            &model,
            CompileOptions {
                max_seqs: 4,
                ..options(256, kv)
            },
        );
        let seqs: Vec<_> = prompts
            .iter()
            .map(|_| batched.kv().create_sequence())
            .collect();
        let entries: Vec<BatchEntry> = seqs
            .iter()
            .zip(&prompts)
            .map(|(&s, p)| BatchEntry::last(s, p))
            .collect();
        let mut logits = batched.step(&entries).unwrap();
        let mut together: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()]; // (seq, step, vocab)
        for step in 0..BATCH_STEPS {
            let next: Vec<[u32; 1]> = (0..prompts.len())
                .map(|i| [argmax(&logits[i * vocab..(i + 1) * vocab])])
                .collect();
            for (i, rows) in together.iter_mut().enumerate() {
                rows.push(logits[i * vocab..(i + 1) * vocab].to_vec());
            }
            if step + 1 < BATCH_STEPS {
                let entries: Vec<BatchEntry> = seqs
                    .iter()
                    .zip(&next)
                    .map(|(&s, t)| BatchEntry::last(s, t))
                    .collect();
                logits = batched.step(&entries).unwrap();
            }
        }
        batched.kv().check_invariants().unwrap();

        let mut alone = cpu(&model, options(256, kv));
        for (i, prompt) in prompts.iter().enumerate() {
            let feed: Vec<u32> = together[i][..BATCH_STEPS - 1]
                .iter()
                .map(|r| argmax(r))
                .collect();
            let rows = teacher_forced(&mut alone, prompt, &feed);
            let worst = rows
                .iter()
                .zip(&together[i])
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0.0, f32::max);
            eprintln!(
                "gemma3 batch kv {}: sequence {i} (prompt {}): max |logit difference| alone vs batched {worst:.3e}",
                kv.name(),
                prompt.len()
            );
            assert!(
                worst < BATCH_MAX_ABS,
                "kv {}, sequence {i}: {worst}",
                kv.name()
            );
        }
    }
}

#[test]
fn window_pages_go_back_to_the_pool_while_decoding() {
    let model = load(DType::Q8_0);
    let groups = model.config.kv_groups();
    assert_eq!(
        groups.windows(),
        [
            None,
            Some(WINDOW),
            Some(WINDOW),
            Some(WINDOW),
            Some(WINDOW),
            Some(WINDOW)
        ]
    );
    let mut runner = cpu(&model, options(N_CTX, KvDtype::F8E4M3));
    let ids = prompt(&model, 0, 100);
    runner.forward(&ids, LogitsFor::Last).unwrap();
    let seq = runner.kv().sequence_ids().next().unwrap();
    let page = runner.kv().kv_page_size();
    for t in 0..150u32 {
        runner.forward(&[t % 1000], LogitsFor::Last).unwrap();
        let len = runner.kv().len(seq).unwrap();
        // The last append started at len - 1: its token reads len - WINDOW ..= len - 1.
        let first_kept = (len - 1 + 1).saturating_sub(WINDOW) / page;
        let expected = len.div_ceil(page) + 5 * (len.div_ceil(page) - first_kept);
        assert_eq!(
            runner.kv().pages_held(seq).unwrap(),
            expected,
            "at {len} tokens"
        );
        assert_eq!(runner.kv().stats().pages_in_use, expected);
    }
    runner.kv().check_invariants().unwrap();
    let len = runner.kv().len(seq).unwrap();
    eprintln!(
        "gemma3 synth at {len} tokens: {} pages held (every layer full attention: {})",
        runner.kv().pages_held(seq).unwrap(),
        6 * len.div_ceil(page)
    );
    // Back one token keeps the context; back past the released pages starts over.
    runner.truncate(len - 1);
    assert_eq!(runner.position(), len - 1);
    runner.truncate(10);
    assert_eq!(runner.position(), 0);
    assert_eq!(runner.kv().stats().pages_in_use, 0);
}

/// The memory figure of issue 16: KV bytes of one sequence of Gemma 3 270M at 8k
/// positions, decoding, with the window layers keeping their window only, against every
/// layer keeping every position.
#[test]
fn gemma3_270m_kv_bytes_per_sequence_at_8k() {
    let shape = Shape::named("gemma3-270m").unwrap();
    let groups = KvGroups::new(&shape.layer_windows()).unwrap();
    for kv in [KvDtype::F8E4M3, KvDtype::F16] {
        let layout = groups
            .layout(shape.n_kv_heads, shape.head_dim())
            .and_then(|l| l.with_dtype(kv))
            .unwrap();
        let windowed =
            groups.pages_per_sequence(layout.kv_page_size(), 8192, 1) * layout.page_bytes();
        let full = 8192 * layout.bytes_per_token() * layout.n_groups();
        eprintln!(
            "gemma3-270m KV per sequence at 8192 positions, {}: {:.2} MiB with windows, {:.2} MiB full attention ({:.1}x less)",
            kv.name(),
            windowed as f64 / (1 << 20) as f64,
            full as f64 / (1 << 20) as f64,
            full as f64 / windowed as f64
        );
        // 3 global layers of 8192 positions and 15 window layers of 33 pages (528 positions).
        assert_eq!(
            windowed,
            (3 * 8192 + 15 * 528) * layout.bytes_per_token() / 3
        );
        assert!(full > 4 * windowed);
    }
}

//! Speculative generation on small synthetic models (a logits table over the last tokens,
//! cheap enough for tens of thousands of generations): greedy output equal to plain
//! decoding with every drafter; the distribution of the first tokens equal to the
//! target's with sampling (chi-square over many seeds); and the same test failing for
//! deliberately broken acceptance rules, so that it is known to be able to fail.

use kiln_gguf::{Gguf, GgufWriter, Value, ValueType};
use kiln_tokenizer::Tokenizer;

use super::*;
use crate::driver::generate as plain_generate;
use crate::sampler::Sampler;

/// Tokens of the synthetic vocabulary; the last is end-of-generation.
const VOCAB: usize = 6;
const EOS: u32 = VOCAB as u32 - 1;

/// A vocabulary of one-letter tokens and an end-of-generation token.
pub(super) fn tokenizer() -> Tokenizer {
    tokenizer_of(&["a", "b", "c", "d", "e", "<eos>"])
}

/// A vocabulary of `tokens`, the last one end-of-generation.
pub(super) fn tokenizer_of(tokens: &[&str]) -> Tokenizer {
    let eos = tokens.len() as u32 - 1;
    let mut types = vec![1; tokens.len()];
    types[eos as usize] = 3;
    let mut w = GgufWriter::new();
    w.metadata("tokenizer.ggml.model", Value::String("gpt2".into()))
        .metadata("tokenizer.ggml.pre", Value::String("gpt-2".into()))
        .metadata(
            "tokenizer.ggml.tokens",
            Value::Array(
                ValueType::String,
                tokens
                    .iter()
                    .map(|t| Value::String(t.to_string()))
                    .collect(),
            ),
        )
        .metadata(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        )
        .metadata(
            "tokenizer.ggml.merges",
            Value::Array(ValueType::String, Vec::new()),
        )
        .metadata("tokenizer.ggml.eos_token_id", Value::U32(eos));
    Tokenizer::from_gguf(&Gguf::from_bytes(w.to_bytes()).unwrap()).unwrap()
}

/// A model whose logits depend on the last two tokens and the position mod 3 through a
/// hash: different seeds are different models over the same vocabulary.
struct Synthetic {
    seed: u64,
    /// Logits span [-scale, scale]: larger is more peaked.
    scale: f32,
    eos_bias: f32,
    held: Vec<u32>,
    n_ctx: usize,
}

impl Synthetic {
    fn new(seed: u64, scale: f32) -> Synthetic {
        Synthetic {
            seed,
            scale,
            eos_bias: -1.0,
            held: Vec::new(),
            n_ctx: 64,
        }
    }

    fn row(&self, prefix: &[u32]) -> Vec<f32> {
        let at = |back: usize| {
            prefix
                .len()
                .checked_sub(back)
                .map_or(99, |i| u64::from(prefix[i]))
        };
        let mut h = self.seed ^ (at(1) << 8) ^ (at(2) << 16) ^ ((prefix.len() % 3) as u64) << 24;
        (0..VOCAB)
            .map(|v| {
                h = splitmix(h.wrapping_add(v as u64));
                let x = (h >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                let bias = if v as u32 == EOS { self.eos_bias } else { 0.0 };
                (2.0 * x - 1.0) * self.scale + bias
            })
            .collect()
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Runner for Synthetic {
    fn name(&self) -> &'static str {
        "synthetic"
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn position(&self) -> usize {
        self.held.len()
    }
    fn reset(&mut self) {
        self.held.clear();
    }
    fn forward(&mut self, tokens: &[u32], logits: LogitsFor) -> Result<Vec<f32>, Error> {
        if self.held.len() + tokens.len() > self.n_ctx {
            return Err(Error::ContextFull {
                needed: self.held.len() + tokens.len(),
                n_ctx: self.n_ctx,
            });
        }
        let first = match logits {
            LogitsFor::Last => tokens.len() - 1,
            LogitsFor::From(i) => i,
        };
        let mut out = Vec::new();
        for (i, &t) in tokens.iter().enumerate() {
            self.held.push(t);
            if i >= first {
                out.extend(self.row(&self.held));
            }
        }
        Ok(out)
    }
    fn truncate(&mut self, len: usize) {
        self.held.truncate(len);
    }
}

/// One-hot guesses from a fixed rule (the next letter), as prompt lookup makes them but
/// wrong often enough to exercise rejection.
struct NextLetter;

impl Drafter for NextLetter {
    fn kind(&self) -> &'static str {
        "next-letter"
    }
    fn draft(&mut self, context: &[u32], k: usize) -> Result<Draft, Error> {
        let last = *context.last().unwrap_or(&0);
        Ok(Draft::one_hot(
            (1..=k as u32)
                .map(|i| (last + i) % (VOCAB as u32 - 1))
                .collect(),
        ))
    }
}

fn request(prompt: &[u32], max_tokens: usize, sampler: SamplerConfig) -> GenerateRequest {
    GenerateRequest {
        prompt_ids: prompt.to_vec(),
        max_tokens,
        sampler,
        ignore_eos: false,
        logprobs: 2,
    }
}

fn drafters() -> Vec<(&'static str, Box<dyn Drafter>)> {
    vec![
        ("lookup 1", Box::new(PromptLookup::new(1).unwrap())),
        ("lookup 2", Box::new(PromptLookup::new(2).unwrap())),
        ("next letter", Box::new(NextLetter)),
        (
            "draft: the target itself",
            Box::new(DraftModel::new(Box::new(Synthetic::new(7, 3.0)))),
        ),
        (
            "draft: another model",
            Box::new(DraftModel::new(Box::new(Synthetic::new(99, 3.0)))),
        ),
    ]
}

#[test]
fn greedy_output_is_plain_greedy_output_with_every_drafter() {
    let tok = tokenizer();
    let prompts: [&[u32]; 4] = [
        &[0],
        &[1, 2, 3, 1, 2],
        &[4, 4, 4, 4],
        &[0, 1, 2, 3, 0, 1, 2],
    ];
    for (name, mut drafter) in drafters() {
        for k_max in [1, 3, 8] {
            for (p, prompt) in prompts.iter().enumerate() {
                for max_tokens in [0, 1, 5, 40, 100] {
                    let req = request(prompt, max_tokens, SamplerConfig::greedy());
                    let mut target = Synthetic::new(7, 3.0);
                    let mut plain_events = Vec::new();
                    let plain = plain_generate(&mut target, &tok, &req, |e| {
                        plain_events.push((e.id, e.text.to_string(), e.tail));
                        true
                    })
                    .unwrap();
                    let mut events = Vec::new();
                    let (spec, stats) = super::generate(
                        &mut target,
                        drafter.as_mut(),
                        &SpecConfig::new(k_max),
                        &tok,
                        &req,
                        |e| {
                            events.push((e.id, e.text.to_string(), e.tail));
                            true
                        },
                    )
                    .unwrap();
                    let what = format!("{name}, k {k_max}, prompt {p}, max {max_tokens}");
                    assert_eq!(spec.tokens, plain.tokens, "{what}");
                    assert_eq!(spec.text, plain.text, "{what}");
                    assert_eq!(spec.logprobs, plain.logprobs, "{what}");
                    assert_eq!(spec.stop_reason, plain.stop_reason, "{what}");
                    assert_eq!(events, plain_events, "{what}");
                    assert!(stats.accepted <= stats.drafted, "{what}");
                    assert_eq!(
                        stats.tokens + u64::from(!spec.tokens.is_empty()),
                        spec.tokens.len() as u64,
                        "{what}: every token after the first comes from a decoding step"
                    );
                    if name.contains("itself") && stats.drafted > 0 {
                        assert_eq!(stats.accepted, stats.drafted, "{what}");
                    }
                }
            }
        }
    }
}

/// Greedy generation of `max_tokens` (end of generation ignored) after `prompt` on a
/// target of `n_ctx` positions drafting for itself (every guess kept).
fn self_drafted(
    prompt: &[u32],
    max_tokens: usize,
    n_ctx: usize,
    on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Generation {
    let req = GenerateRequest {
        ignore_eos: true,
        ..request(prompt, max_tokens, SamplerConfig::greedy())
    };
    let mut target = Synthetic::new(7, 3.0);
    target.n_ctx = n_ctx;
    let mut drafter = DraftModel::new(Box::new(Synthetic::new(7, 3.0)));
    let config = SpecConfig::new(8);
    let (g, _) = super::generate(
        &mut target,
        &mut drafter,
        &config,
        &tokenizer(),
        &req,
        on_token,
    )
    .unwrap();
    assert!(target.held.len() <= n_ctx);
    g
}

#[test]
fn a_cancel_inside_the_kept_guesses_stops_there() {
    let mut seen = 0;
    let g = self_drafted(&[0, 1], 30, 64, |_| {
        seen += 1;
        seen < 6
    });
    assert_eq!(g.tokens.len(), 6);
    assert_eq!(g.stop_reason, StopReason::Cancelled);
}

#[test]
fn the_context_limit_is_kept() {
    let req = GenerateRequest {
        ignore_eos: true,
        ..request(&[0, 1, 2], 100, SamplerConfig::greedy())
    };
    let mut plain_target = Synthetic::new(7, 3.0);
    plain_target.n_ctx = 20;
    let plain = plain_generate(&mut plain_target, &tokenizer(), &req, |_| true).unwrap();
    let g = self_drafted(&[0, 1, 2], 100, 20, |_| true);
    assert_eq!(g.tokens, plain.tokens);
    assert_eq!(g.stop_reason, StopReason::ContextFull);
}

// ---------------------------------------------------------------------------------------
// The distribution test.

/// Tokens whose joint distribution is compared.
const FIRST: usize = 3;
const RUNS: usize = 30_000;

/// The exact probability of every sequence of FIRST tokens after `prompt` under the
/// sampler's distribution of the target's rows (end of generation ends a sequence early).
fn exact(prompt: &[u32], sampling: &SamplerConfig) -> Vec<(Vec<u32>, f64)> {
    let sampler = Sampler::new(sampling.clone()).unwrap();
    let target = Synthetic::new(7, 2.0);
    let mut out = Vec::new();
    let mut stack = vec![(Vec::<u32>::new(), 1.0f64)];
    while let Some((seq, p)) = stack.pop() {
        if seq.len() == FIRST || seq.last() == Some(&EOS) {
            out.push((seq, p));
            continue;
        }
        let mut prefix = prompt.to_vec();
        prefix.extend(&seq);
        for &(id, q) in &sampler.distribution(&target.row(&prefix)).tokens {
            let mut next = seq.clone();
            next.push(id);
            stack.push((next, p * f64::from(q)));
        }
    }
    out
}

/// Chi-square of `RUNS` speculative generations against the exact distribution, with
/// cells of expected count under 5 pooled; returns (statistic, degrees of freedom, total
/// variation distance).
fn chi_square(
    drafter: &mut dyn Drafter,
    rule: &dyn Rule,
    prompt: &[u32],
    sampling: &SamplerConfig,
) -> (f64, usize, f64) {
    let tok = tokenizer();
    let law = exact(prompt, sampling);
    let index: std::collections::HashMap<Vec<u32>, usize> = law
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (s.clone(), i))
        .collect();
    let mut counts = vec![0usize; law.len()];
    let mut target = Synthetic::new(7, 2.0);
    for seed in 0..RUNS as u64 {
        let req = request(
            prompt,
            FIRST,
            SamplerConfig {
                seed,
                ..sampling.clone()
            },
        );
        let (g, _) = generate_with_rule(
            &mut target,
            drafter,
            &SpecConfig::new(3),
            rule,
            &tok,
            &req,
            |_| true,
        )
        .unwrap();
        let i = index
            .get(&g.tokens)
            .unwrap_or_else(|| panic!("{:?} has probability 0", g.tokens));
        counts[*i] += 1;
    }
    let n = RUNS as f64;
    let tv = law
        .iter()
        .zip(&counts)
        .map(|((_, p), &c)| (c as f64 / n - p).abs())
        .sum::<f64>()
        / 2.0;
    let (mut stat, mut cells, mut pooled_e, mut pooled_o) = (0.0, 0usize, 0.0, 0.0);
    for ((_, p), &c) in law.iter().zip(&counts) {
        let e = p * n;
        if e < 5.0 {
            pooled_e += e;
            pooled_o += c as f64;
        } else {
            stat += (c as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    if pooled_e > 0.0 {
        stat += (pooled_o - pooled_e).powi(2) / pooled_e;
        cells += 1;
    }
    (stat, cells - 1, tv)
}

/// The chi-square value a correct sampler exceeds with probability 1e-4 (Wilson–Hilferty).
fn critical(dof: usize) -> f64 {
    let nu = dof as f64;
    let z = 3.719;
    let a = 2.0 / (9.0 * nu);
    nu * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Keeps every guess: the output follows the draft where it guessed.
struct KeepAll;
impl Rule for KeepAll {
    fn keep(&self, _p: f32, _q: f32, _u: f32) -> bool {
        true
    }
    fn residual(&self, p: &Distribution, q: &Distribution) -> Distribution {
        Standard.residual(p, q)
    }
}

/// The right test, but after a rejection draws from p itself instead of the residual.
struct ResampleTarget;
impl Rule for ResampleTarget {
    fn keep(&self, p: f32, q: f32, u: f32) -> bool {
        Standard.keep(p, q, u)
    }
    fn residual(&self, p: &Distribution, _q: &Distribution) -> Distribution {
        p.clone()
    }
}

/// Treats a sampled guess as one-hot: keeps it with probability p.
struct IgnoreQ;
impl Rule for IgnoreQ {
    fn keep(&self, p: f32, _q: f32, u: f32) -> bool {
        u < p
    }
    fn residual(&self, p: &Distribution, q: &Distribution) -> Distribution {
        Standard.residual(p, q)
    }
}

fn samplings() -> [SamplerConfig; 2] {
    [
        SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
        },
        SamplerConfig {
            temperature: 0.7,
            top_k: 4,
            top_p: 0.95,
            min_p: 0.02,
            seed: 0,
        },
    ]
}

#[test]
fn sampled_output_has_the_target_distribution() {
    let prompt = [0, 1, 2, 0, 1];
    for sampling in samplings() {
        let cases: Vec<(&str, Box<dyn Drafter>)> = vec![
            (
                "draft model",
                Box::new(DraftModel::new(Box::new(Synthetic::new(99, 2.0)))),
            ),
            ("one-hot guesses", Box::new(NextLetter)),
            ("prompt lookup", Box::new(PromptLookup::new(1).unwrap())),
        ];
        for (name, mut drafter) in cases {
            let (stat, dof, tv) = chi_square(drafter.as_mut(), &Standard, &prompt, &sampling);
            eprintln!(
                "{name}, temperature {}: chi-square {stat:.1} ({dof} dof, critical {:.1}), total variation {tv:.4}",
                sampling.temperature,
                critical(dof)
            );
            assert!(
                stat < critical(dof),
                "{name}: chi-square {stat:.1} over {dof} dof"
            );
            assert!(tv < 0.03, "{name}: total variation {tv}");
        }
    }
}

/// The test of the test: each broken rule moves the distribution far enough to fail.
#[test]
fn the_distribution_test_fails_for_broken_rules() {
    let prompt = [0, 1, 2, 0, 1];
    let sampling = &samplings()[0];
    let broken: [(&str, &dyn Rule, Box<dyn Drafter>); 4] = [
        (
            "keep every guess",
            &KeepAll,
            Box::new(DraftModel::new(Box::new(Synthetic::new(99, 2.0)))),
        ),
        (
            "resample from p",
            &ResampleTarget,
            Box::new(DraftModel::new(Box::new(Synthetic::new(99, 2.0)))),
        ),
        (
            "ignore q",
            &IgnoreQ,
            Box::new(DraftModel::new(Box::new(Synthetic::new(99, 2.0)))),
        ),
        (
            "resample from p, one-hot",
            &ResampleTarget,
            Box::new(NextLetter),
        ),
    ];
    for (name, rule, mut drafter) in broken {
        let (stat, dof, tv) = chi_square(drafter.as_mut(), rule, &prompt, sampling);
        eprintln!(
            "broken rule {name}: chi-square {stat:.1} ({dof} dof, critical {:.1}), total variation {tv:.4}",
            critical(dof)
        );
        assert!(
            stat > 2.0 * critical(dof),
            "the broken rule `{name}` passed: chi-square {stat:.1} over {dof} dof"
        );
    }
}

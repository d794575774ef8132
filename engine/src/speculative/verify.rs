//! Verification: the target model's rows for the step judge the guesses.
//!
//! A verification step runs `[last token, g₁ … g_k]` through the target model and gets
//! k + 1 rows of logits: row i is the target's distribution p_i for the token after the
//! first i guesses. Greedy: guesses are kept while they equal the row's argmax, and the
//! first row that disagrees (or the last row) gives the next token — exactly the tokens
//! plain greedy decoding makes. Sampling: speculative sampling (Leviathan et al. 2023,
//! Chen et al. 2023) keeps a guess drawn from q with probability min(1, p/q); at the first
//! rejection the next token is drawn from the residual norm(max(0, p − q)); when every
//! guess is kept one more token is drawn from the last row. Each token then has the
//! target's distribution, whatever q is. Prompt lookup's guesses are one-hot drafts (q = 1
//! on the guess).

use crate::sampler::{Distribution, Sampler, argmax};

/// What a verification step decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Guesses kept, from the first.
    pub accepted: usize,
    /// The token after the kept guesses (drawn from row `accepted`).
    pub next: u32,
}

/// How a sampled guess is judged. [`Standard`] is the rule that keeps the target's
/// distribution; the trait exists so that the distribution test can run a deliberately
/// broken rule through the same loop and watch the test fail.
pub trait Rule {
    /// Whether a guess the target gives probability `p` and the draft gave `q` (> 0) is
    /// kept, for a uniform draw `u` in [0, 1).
    fn keep(&self, p: f32, q: f32, u: f32) -> bool;
    /// The distribution the next token is drawn from after a rejection.
    fn residual(&self, p: &Distribution, q: &Distribution) -> Distribution;
}

/// Speculative sampling's rule: keep with probability min(1, p/q), else draw from
/// norm(max(0, p − q)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standard;

impl Rule for Standard {
    fn keep(&self, p: f32, q: f32, u: f32) -> bool {
        u * q < p
    }

    fn residual(&self, p: &Distribution, q: &Distribution) -> Distribution {
        let mut q_by_id = q.tokens.clone();
        q_by_id.sort_unstable_by_key(|t| t.0);
        let q_of = |id: u32| {
            q_by_id
                .binary_search_by_key(&id, |t| t.0)
                .map_or(0.0, |i| q_by_id[i].1)
        };
        let mut tokens: Vec<(u32, f32)> = p
            .tokens
            .iter()
            .map(|&(id, pi)| (id, (pi - q_of(id)).max(0.0)))
            .filter(|t| t.1 > 0.0)
            .collect();
        let sum: f32 = tokens.iter().map(|t| t.1).sum();
        if sum <= 0.0 {
            // p ≤ q everywhere means p = q: a rejection had probability 0 (rounding).
            return p.clone();
        }
        tokens.iter_mut().for_each(|t| t.1 /= sum);
        Distribution { tokens }
    }
}

/// Judges `guesses` against `rows` (`guesses.len() + 1` rows of `vocab` logits). `q` holds
/// the draft's distribution of each guess; None means one-hot guesses (prompt lookup, or
/// a greedy draft). The sampler's configuration decides greedy or sampled verification,
/// and its generator draws the uniforms and the next token.
pub fn verify(
    sampler: &mut Sampler,
    rule: &dyn Rule,
    rows: &[f32],
    vocab: usize,
    guesses: &[u32],
    q: Option<&[Distribution]>,
) -> Verdict {
    let row = |i: usize| &rows[i * vocab..(i + 1) * vocab];
    if sampler.config().temperature <= 0.0 {
        for (i, &guess) in guesses.iter().enumerate() {
            let best = argmax(row(i));
            if best != guess {
                return Verdict {
                    accepted: i,
                    next: best,
                };
            }
        }
        return Verdict {
            accepted: guesses.len(),
            next: argmax(row(guesses.len())),
        };
    }
    for (i, &guess) in guesses.iter().enumerate() {
        let p = sampler.distribution(row(i));
        let one_hot;
        let q_i = match q {
            Some(q) => &q[i],
            None => {
                one_hot = Distribution::one_hot(guess);
                &one_hot
            }
        };
        let u = sampler.uniform();
        if !rule.keep(p.p(guess), q_i.p(guess), u) {
            let residual = rule.residual(&p, q_i);
            return Verdict {
                accepted: i,
                next: sampler.draw(&residual),
            };
        }
    }
    let last = sampler.distribution(row(guesses.len()));
    Verdict {
        accepted: guesses.len(),
        next: sampler.draw(&last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerConfig;

    fn dist(tokens: &[(u32, f32)]) -> Distribution {
        Distribution {
            tokens: tokens.to_vec(),
        }
    }

    #[test]
    fn the_residual_is_the_normalised_excess_of_p_over_q() {
        let p = dist(&[(0, 0.5), (1, 0.3), (2, 0.2)]);
        let q = dist(&[(1, 0.6), (0, 0.1), (3, 0.3)]);
        let r = Standard.residual(&p, &q);
        // max(0, p - q) = {0: 0.4, 1: 0, 2: 0.2}, normalised.
        assert_eq!(r.tokens.len(), 2);
        assert!((r.p(0) - 0.4 / 0.6).abs() < 1e-6);
        assert!((r.p(2) - 0.2 / 0.6).abs() < 1e-6);
        // A one-hot draft: p without the guess.
        let r = Standard.residual(&p, &Distribution::one_hot(0));
        assert!((r.p(1) - 0.6).abs() < 1e-6 && r.p(0) == 0.0);
        // p = q: nothing in excess, p itself.
        assert_eq!(Standard.residual(&p, &p), p);
    }

    #[test]
    fn greedy_keeps_guesses_while_they_are_the_argmax() {
        let vocab = 4;
        let rows = [
            0.0, 3.0, 1.0, 0.0, // argmax 1
            2.0, 0.0, 1.0, 0.0, // argmax 0
            0.0, 0.0, 0.0, 5.0, // argmax 3
        ];
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        let v = |g: &[u32], s: &mut Sampler| verify(s, &Standard, &rows, vocab, g, None);
        assert_eq!(
            v(&[1, 0], &mut s),
            Verdict {
                accepted: 2,
                next: 3
            }
        );
        assert_eq!(
            v(&[1, 2], &mut s),
            Verdict {
                accepted: 1,
                next: 0
            }
        );
        assert_eq!(
            v(&[2, 0], &mut s),
            Verdict {
                accepted: 0,
                next: 1
            }
        );
        assert_eq!(
            v(&[], &mut s),
            Verdict {
                accepted: 0,
                next: 1
            }
        );
    }
}

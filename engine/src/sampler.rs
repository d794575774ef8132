//! Sampling: greedy, or temperature with top-k, top-p and min-p filters, from a seeded RNG.
//! Filters apply in llama.cpp's default order: top-k, top-p, min-p, then temperature.

use kiln_ir::step::{Candidate, NON_FINITE_ROW, top_k};

use crate::Error;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one; 0 keeps all.
    pub min_p: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    pub fn greedy() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::BadSampling(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature {} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min-p {} must be in [0, 1]", self.min_p));
        }
        Ok(())
    }
}

/// A seeded sampler. The same seed, config and logits give the same tokens.
#[derive(Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Sampler, Error> {
        config.validate()?;
        let rng = Rng::new(config.seed);
        Ok(Sampler { config, rng })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Pick the next token from one row of logits. A NaN or +∞ among them is an error:
    /// no token can be chosen from a broken distribution (argmax would pick the same one
    /// forever). −∞ is a token that cannot be drawn.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, Error> {
        check_finite(logits)?;
        if self.config.temperature <= 0.0 {
            return Ok(argmax(logits));
        }
        let dist = self.distribution(logits);
        Ok(self.draw(&dist))
    }

    /// How many of a row's most likely tokens this sampler looks at, of a vocabulary of
    /// `vocab`: one when greedy, `top_k` when it filters by it, else all of them. A row's
    /// top that many ([`top_k`], as a device computes it: `Backend::read_top_k`) gives
    /// [`Self::sample_candidates`] the token [`Self::sample`] gives from the whole row.
    pub fn candidates(&self, vocab: usize) -> usize {
        if self.config.temperature <= 0.0 {
            1.min(vocab)
        } else if self.config.top_k == 0 {
            vocab
        } else {
            self.config.top_k.min(vocab)
        }
    }

    /// [`Self::sample`] from a row's most likely tokens, ordered as [`top_k`] orders them:
    /// at least [`Self::candidates`] of them (more are cut to it, so one top-k can serve
    /// samplers of several k). A row flagged non-finite is an error, as in `sample`.
    pub fn sample_candidates(&mut self, cand: &[Candidate]) -> Result<u32, Error> {
        match cand.first() {
            None => Err(Error::Invalid("sampling from no candidates".into())),
            Some(c) if c.id == NON_FINITE_ROW => Err(Error::NonFiniteRow),
            Some(c) if self.config.temperature <= 0.0 => Ok(c.id),
            Some(_) => {
                let dist = self.distribution_of(cand);
                Ok(self.draw(&dist))
            }
        }
    }

    /// The distribution [`Self::sample`] draws from: the tokens the filters keep with their
    /// probabilities, most likely first. Greedy sampling is one token with probability 1.
    pub fn distribution(&self, logits: &[f32]) -> Distribution {
        if self.config.temperature <= 0.0 {
            return Distribution {
                tokens: vec![(argmax(logits), 1.0)],
            };
        }
        let mut cand = vec![Candidate::NON_FINITE; self.candidates(logits.len())];
        top_k(logits, &mut cand);
        self.distribution_of(&cand)
    }

    /// [`Self::distribution`] from the row's most likely tokens (as for
    /// [`Self::sample_candidates`]); greedy keeps the first.
    pub fn distribution_of(&self, cand: &[Candidate]) -> Distribution {
        let k = self.candidates(usize::MAX).min(cand.len());
        let mut cand: Vec<(u32, f32)> = cand[..k].iter().map(|c| (c.id, c.logit)).collect();
        if self.config.temperature <= 0.0 || cand.is_empty() {
            return Distribution {
                tokens: cand.first().map(|c| (c.0, 1.0)).into_iter().collect(),
            };
        }
        let probs = softmax_of(&cand, 1.0);
        // top-p: the shortest prefix whose mass reaches p (at least one token).
        let mut mass = 0.0f32;
        let mut keep = cand.len();
        for (i, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= self.config.top_p {
                keep = i + 1;
                break;
            }
        }
        // min-p: relative to the most likely token.
        let floor = self.config.min_p * probs[0];
        keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        cand.truncate(keep);

        let probs = softmax_of(&cand, self.config.temperature);
        Distribution {
            tokens: cand.iter().map(|c| c.0).zip(probs).collect(),
        }
    }

    /// Draw one token of `dist` with this sampler's generator.
    pub fn draw(&mut self, dist: &Distribution) -> u32 {
        let r = self.rng.next_f32();
        let mut acc = 0.0f32;
        for &(id, p) in &dist.tokens {
            acc += p;
            if r < acc {
                return id;
            }
        }
        dist.tokens.last().map_or(0, |c| c.0)
    }

    /// A uniform number in [0, 1) from this sampler's generator (speculative decoding's
    /// acceptance test draws from the same stream as the tokens).
    pub fn uniform(&mut self) -> f32 {
        self.rng.next_f32()
    }
}

/// A distribution over token ids: the tokens with non-zero probability, each once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    /// (id, probability); the probabilities sum to 1 (to f32 rounding).
    pub tokens: Vec<(u32, f32)>,
}

impl Distribution {
    /// All the mass on one token.
    pub fn one_hot(id: u32) -> Distribution {
        Distribution {
            tokens: vec![(id, 1.0)],
        }
    }

    /// The probability of `id` (0 for a token the distribution does not hold).
    pub fn p(&self, id: u32) -> f32 {
        self.tokens.iter().find(|t| t.0 == id).map_or(0.0, |t| t.1)
    }
}

/// Index of the largest logit (the first one on ties, as llama.cpp's greedy sampler; a
/// NaN never wins, a row of NaNs gives 0): for rows already checked, or where any id
/// will do (speculative verification compares guesses with it).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) && !v.is_nan() {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// A row of logits must hold numbers (−∞ is a token that cannot be drawn): a NaN or +∞
/// means the model or backend is broken, and no token can be chosen.
pub fn check_finite(logits: &[f32]) -> Result<(), Error> {
    match logits
        .iter()
        .position(|l| l.is_nan() || *l == f32::INFINITY)
    {
        Some(index) => Err(Error::NonFiniteLogits {
            index,
            value: logits[index],
        }),
        None => Ok(()),
    }
}

fn softmax_of(cand: &[(u32, f32)], temperature: f32) -> Vec<f32> {
    let max = cand.first().map_or(0.0, |c| c.1);
    let mut p: Vec<f32> = cand
        .iter()
        .map(|c| ((c.1 - max) / temperature).exp())
        .collect();
    let sum: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= sum);
    p
}

/// log-softmax of one row of logits.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_sum = sum.ln() as f32 + max;
    logits.iter().map(|&l| l - log_sum).collect()
}

/// The k most likely tokens of a row of logits as (id, log-probability), most likely first.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let lp = log_softmax(logits);
    let mut ids: Vec<u32> = (0..lp.len() as u32).collect();
    let k = k.min(ids.len());
    if k == 0 {
        return Vec::new();
    }
    ids.select_nth_unstable_by(k - 1, |&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
    ids.truncate(k);
    ids.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b)));
    ids.into_iter().map(|i| (i, lp[i as usize])).collect()
}

/// xoshiro256** seeded by splitmix64: small, fast, reproducible across platforms.
#[derive(Debug)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 0.5, 3.0]
    }

    /// A row's top candidates (as a device's top-k hands them) give the tokens the whole
    /// row gives, draw for draw, for every filter; more candidates than needed change
    /// nothing (one top-k serves a batch of samplers).
    #[test]
    fn candidates_sample_as_the_whole_row() {
        let mut rng = Rng::new(11);
        // Few levels, so that ties are common; some −∞.
        let row: Vec<f32> = (0..1000)
            .map(|i| match rng.next_u64() % 9 {
                0 if i % 7 == 0 => f32::NEG_INFINITY,
                level => level as f32 * 0.37 - 1.0,
            })
            .collect();
        for (temperature, k_filter, top_p, min_p) in [
            (0.0, 40, 0.95, 0.05),
            (0.8, 40, 0.95, 0.05),
            (1.3, 1, 1.0, 0.0),
            (2.0, 7, 0.5, 0.0),
            (1.0, 300, 1.0, 0.01),
            (0.7, 0, 0.9, 0.0),
        ] {
            let config = SamplerConfig {
                temperature,
                top_k: k_filter,
                top_p,
                min_p,
                seed: 5,
            };
            let mut whole = Sampler::new(config.clone()).unwrap();
            let mut from_top = Sampler::new(config).unwrap();
            let k = (from_top.candidates(row.len()) + 3).min(row.len());
            let mut cand = vec![Candidate::NON_FINITE; k];
            top_k(&row, &mut cand);
            assert_eq!(whole.distribution(&row), from_top.distribution_of(&cand));
            for _ in 0..200 {
                assert_eq!(
                    whole.sample(&row).unwrap(),
                    from_top.sample_candidates(&cand).unwrap()
                );
            }
        }
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        let flagged = [Candidate::NON_FINITE; 40];
        assert!(matches!(
            s.sample_candidates(&flagged),
            Err(Error::NonFiniteRow)
        ));
        assert!(s.sample_candidates(&[]).is_err());
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&logits()).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_seeds_differ() {
        let cfg = SamplerConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
        };
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig {
                seed,
                ..cfg.clone()
            })
            .unwrap();
            (0..64)
                .map(|_| s.sample(&logits()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 5.0,
            top_k: 1,
            top_p: 1.0,
            min_p: 0.0,
            seed: 3,
        })
        .unwrap();
        for _ in 0..50 {
            // Of the tied maxima (1 and 5) top-k 1 keeps the lower id, as argmax does.
            assert_eq!(s.sample(&logits()).unwrap(), 1);
        }
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Token 0 holds almost all the mass: top-p 0.5 and min-p 0.5 leave only it.
        let l = vec![10.0, 0.0, 0.0, 0.0];
        for cfg in [
            SamplerConfig {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.5,
                min_p: 0.0,
                seed: 1,
            },
            SamplerConfig {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.5,
                seed: 1,
            },
        ] {
            let mut s = Sampler::new(cfg).unwrap();
            assert!((0..200).all(|_| s.sample(&l).unwrap() == 0));
        }
        // Without filters the tail is drawn sometimes at a high temperature.
        let mut s = Sampler::new(SamplerConfig {
            temperature: 10.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 1,
        })
        .unwrap();
        assert!((0..200).any(|_| s.sample(&l).unwrap() != 0));
    }

    #[test]
    fn nan_and_infinite_logits_are_errors_for_every_config() {
        for config in [SamplerConfig::greedy(), SamplerConfig::default()] {
            let mut s = Sampler::new(config).unwrap();
            for bad in [f32::NAN, f32::INFINITY] {
                let mut l = logits();
                l[3] = bad;
                let e = s.sample(&l).unwrap_err();
                assert!(
                    matches!(e, Error::NonFiniteLogits { index: 3, .. }),
                    "{bad}: {e:?}"
                );
            }
            // A token at -inf is simply never drawn.
            let mut l = logits();
            l[1] = f32::NEG_INFINITY;
            l[5] = f32::NEG_INFINITY;
            for _ in 0..100 {
                assert!(![1, 5].contains(&s.sample(&l).unwrap()));
            }
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        for cfg in [
            SamplerConfig {
                temperature: -1.0,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                top_p: 0.0,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                min_p: 1.5,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                temperature: f32::NAN,
                ..SamplerConfig::default()
            },
        ] {
            assert!(matches!(Sampler::new(cfg), Err(Error::BadSampling(_))));
        }
    }

    #[test]
    fn log_softmax_normalises_and_top_logprobs_orders() {
        let lp = log_softmax(&logits());
        let total: f64 = lp.iter().map(|&v| f64::from(v).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        let top = top_logprobs(&logits(), 3);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 5, 2]);
        assert!(top[0].1 >= top[2].1);
    }
}

//! How many guesses to ask for: fewer when they keep failing, and none when they cost more
//! than they save.
//!
//! Guesses are modelled as kept one after another with a probability α each, until the
//! first rejection (the geometric model of the speculative-decoding papers), so k guesses
//! give E(k) = 1 + α + … + α^k tokens a step. α is estimated from recent verification
//! steps: kept guesses over kept guesses plus rejections, both decayed so that the
//! estimate follows the text (a copied passage ends, free text begins).
//!
//! Where the caller reports what steps cost ([`GuessLength::observe`]: the seconds of a
//! verification step by its number of tokens, and of the drafting per guess), k is the one
//! that makes the most tokens per second, E(k) / (t(k + 1) + k·g). That follows the
//! backend: on a GPU a step of 8 tokens costs about one of 1, on a CPU a step costs more
//! per token past a tile's width, and a draft model as large as the target never pays.
//! Step sizes not measured yet are estimated optimistically, so they get tried. Without
//! costs (the serving scheduler, whose steps are shared) the guesses go on while the next
//! one is kept with a probability above `min_keep_probability`.

/// Weight of the past in the running counts (per verification step).
const DECAY: f64 = 0.8;
/// Weight of a new cost measurement.
const COST_WEIGHT: f64 = 0.3;
/// Extra cost per token of a step size not measured yet, relative to a measured one.
const PRIOR_MARGINAL: f64 = 0.25;
/// While no guess pays, every this many steps one guess is tried all the same, so that a
/// text turning predictable is noticed.
const PROBE_EVERY: u32 = 16;

/// The guess-length controller of one generation.
#[derive(Clone, Debug, PartialEq)]
pub struct GuessLength {
    k_max: usize,
    adaptive: bool,
    min_keep_probability: f64,
    /// Decayed counts of kept guesses and of rejections.
    kept: f64,
    rejected: f64,
    /// Seconds of a verification step of `i + 1` tokens (decayed mean), once measured.
    step_seconds: Vec<Option<f64>>,
    /// Seconds of drafting per guess (decayed mean), once measured.
    guess_seconds: Option<f64>,
    /// Steps since the last guess while none paid.
    idle: u32,
}

impl GuessLength {
    /// `k_max` guesses at most; with `adaptive` false always `k_max`.
    pub fn new(k_max: usize, adaptive: bool, min_keep_probability: f64) -> GuessLength {
        GuessLength {
            k_max,
            adaptive,
            min_keep_probability: min_keep_probability.clamp(1e-6, 1.0 - 1e-6),
            // A prior of one rejection in three guesses: start in the middle.
            kept: 2.0,
            rejected: 1.0,
            step_seconds: vec![None; k_max + 1],
            guess_seconds: None,
            idle: 0,
        }
    }

    /// The estimated probability that a guess is kept.
    pub fn keep_rate(&self) -> f64 {
        self.kept / (self.kept + self.rejected)
    }

    /// Guesses to ask for next.
    pub fn next(&mut self) -> usize {
        if !self.adaptive || self.k_max == 0 {
            return self.k_max;
        }
        let alpha = self.keep_rate();
        if !self.step_seconds.iter().any(Option::is_some) {
            if alpha >= 1.0 - 1e-9 {
                return self.k_max;
            }
            let k = (self.min_keep_probability.ln() / alpha.ln()).floor();
            return (k as usize).clamp(1, self.k_max);
        }
        let g = self.guess_seconds.unwrap_or(0.0);
        let mut best = (0, 1.0 / self.step_cost(1));
        let mut expected = 1.0; // E(k): tokens a step of k guesses makes
        for k in 1..=self.k_max {
            expected += alpha.powi(k as i32);
            let rate = expected / (self.step_cost(k + 1) + k as f64 * g);
            if rate > best.1 {
                best = (k, rate);
            }
        }
        if best.0 > 0 {
            self.idle = 0;
            return best.0;
        }
        self.idle += 1;
        if self.idle >= PROBE_EVERY {
            self.idle = 0;
            return 1;
        }
        0
    }

    /// What a verification step with `drafted` guesses kept.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.kept = self.kept * DECAY + accepted as f64;
        self.rejected = self.rejected * DECAY + f64::from(u8::from(accepted < drafted));
    }

    /// A verification step of `tokens` tokens took `seconds`, and drafting its `drafted`
    /// guesses `draft_seconds`.
    pub fn observe(&mut self, tokens: usize, seconds: f64, drafted: usize, draft_seconds: f64) {
        if let Some(slot) = tokens
            .checked_sub(1)
            .and_then(|i| self.step_seconds.get_mut(i))
        {
            *slot = Some(slot.map_or(seconds, |s| s + COST_WEIGHT * (seconds - s)));
        }
        if drafted > 0 {
            let per_guess = draft_seconds / drafted as f64;
            self.guess_seconds = Some(
                self.guess_seconds
                    .map_or(per_guess, |s| s + COST_WEIGHT * (per_guess - s)),
            );
        }
    }

    /// The seconds of a step of `n` tokens: measured, else between the measured sizes
    /// around it, else from the nearest one at an optimistic cost per token.
    fn step_cost(&self, n: usize) -> f64 {
        let at = |i: usize| self.step_seconds[i - 1].map(|s| (i, s));
        if let Some((_, s)) = at(n) {
            return s;
        }
        let below = (1..n).rev().find_map(at);
        let above = (n + 1..=self.step_seconds.len()).find_map(at);
        let prior = |from: usize, s: f64, to: usize| {
            s * (1.0 + PRIOR_MARGINAL * (to as f64 - 1.0))
                / (1.0 + PRIOR_MARGINAL * (from as f64 - 1.0))
        };
        match (below, above) {
            (Some((lo, a)), Some((hi, b))) => a + (b - a) * (n - lo) as f64 / (hi - lo) as f64,
            (Some((lo, a)), None) => prior(lo, a, n),
            (None, Some((hi, b))) => prior(hi, b, n),
            (None, None) => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_shrink_when_they_fail_and_grow_when_they_hold() {
        let mut k = GuessLength::new(8, true, 0.3);
        let start = k.next();
        assert!((1..=8).contains(&start));
        for _ in 0..20 {
            let n = k.next();
            k.update(n, 0);
        }
        assert_eq!(k.next(), 1, "every guess rejected");
        for _ in 0..20 {
            let n = k.next();
            k.update(n, n);
        }
        assert_eq!(k.next(), 8, "every guess kept");
        for _ in 0..60 {
            k.update(4, 2);
        }
        // α = 2/3: the third guess is kept with 0.30, the fourth with 0.20.
        assert_eq!(k.next(), 2);
        // Steps without guesses say nothing.
        let before = k.clone();
        k.update(0, 0);
        assert_eq!(k, before);
    }

    #[test]
    fn a_fixed_length_does_not_move() {
        let mut k = GuessLength::new(4, false, 0.3);
        for _ in 0..10 {
            k.update(4, 0);
            k.observe(5, 1.0, 4, 10.0);
        }
        assert_eq!(k.next(), 4);
        assert_eq!(GuessLength::new(0, true, 0.3).next(), 0);
    }

    /// Nine guesses in ten kept: the count that makes the most tokens per second.
    fn with_costs(costs: &[f64], guess: f64) -> usize {
        let mut k = GuessLength::new(costs.len() - 1, true, 0.3);
        for _ in 0..60 {
            k.update(10, 9);
        }
        for (i, &c) in costs.iter().enumerate() {
            k.observe(i + 1, c, i, i as f64 * guess);
        }
        k.next()
    }

    #[test]
    fn the_costs_of_steps_choose_the_count() {
        // A GPU: 8 tokens cost about one.
        assert_eq!(
            with_costs(&[1.0, 1.0, 1.0, 1.0, 1.05, 1.05, 1.1, 1.1, 1.1], 0.0),
            8
        );
        // A CPU whose tiles take 4 tokens: 4 tokens cost 1.85, 5 cost 2.5.
        assert_eq!(
            with_costs(&[1.0, 1.6, 1.8, 1.85, 2.5, 2.9, 3.2, 3.35, 4.0], 0.0),
            3
        );
        // A draft as expensive as the target: no guess pays.
        let mut k = GuessLength::new(4, true, 0.3);
        for (i, c) in [1.0, 1.2, 1.4, 1.6, 1.8].into_iter().enumerate() {
            k.observe(i + 1, c, i, i as f64);
        }
        let picks: Vec<usize> = (0..2 * PROBE_EVERY).map(|_| k.next()).collect();
        assert_eq!(
            picks.iter().filter(|&&n| n > 0).count(),
            2,
            "a probe now and then"
        );
        assert!(picks.iter().all(|&n| n <= 1));
    }

    #[test]
    fn sizes_not_measured_are_estimated_from_those_that_are() {
        let mut k = GuessLength::new(8, true, 0.3);
        k.observe(1, 1.0, 0, 0.0);
        k.observe(5, 2.0, 4, 0.0);
        assert_eq!(k.step_cost(3), 1.5, "between two measured sizes");
        assert_eq!(
            k.step_cost(9),
            2.0 * 3.0 / 2.0,
            "past the largest: the prior's slope"
        );
        k.observe(5, 3.0, 4, 0.0);
        assert!((k.step_cost(5) - 2.3).abs() < 1e-12, "a decayed mean");
    }
}

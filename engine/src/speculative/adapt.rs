//! How many guesses to ask for: fewer when they keep failing.
//!
//! Guesses are modelled as kept one after another with a probability α each, until the
//! first rejection (the geometric model of the speculative-decoding papers). α is
//! estimated from recent verification steps: kept guesses over kept guesses plus
//! rejections, both decayed so that the estimate follows the text (a copied passage ends,
//! free text begins). The k-th guess is kept with probability α^k; guesses are asked for
//! while that stays above `min_keep_probability`, at least one and at most `k_max`.

/// Weight of the past in the running counts (per verification step).
const DECAY: f64 = 0.8;

/// The guess-length controller of one generation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuessLength {
    k_max: usize,
    adaptive: bool,
    min_keep_probability: f64,
    /// Decayed counts of kept guesses and of rejections.
    kept: f64,
    rejected: f64,
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
        }
    }

    /// The estimated probability that a guess is kept.
    pub fn keep_rate(&self) -> f64 {
        self.kept / (self.kept + self.rejected)
    }

    /// Guesses to ask for next.
    pub fn next(&self) -> usize {
        if !self.adaptive || self.k_max <= 1 {
            return self.k_max;
        }
        let alpha = self.keep_rate();
        if alpha >= 1.0 - 1e-9 {
            return self.k_max;
        }
        let k = (self.min_keep_probability.ln() / alpha.ln()).floor();
        (k as usize).clamp(1, self.k_max)
    }

    /// What a verification step with `drafted` guesses kept.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.kept = self.kept * DECAY + accepted as f64;
        self.rejected = self.rejected * DECAY + f64::from(u8::from(accepted < drafted));
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
            k.update(k.next(), 0);
        }
        assert_eq!(k.next(), 1, "every guess rejected");
        for _ in 0..20 {
            k.update(k.next(), k.next());
        }
        assert_eq!(k.next(), 8, "every guess kept");
        for _ in 0..60 {
            k.update(4, 2);
        }
        // α = 2/3: the third guess is kept with 0.30, the fourth with 0.20.
        assert_eq!(k.next(), 2);
        // Steps without guesses say nothing.
        let before = k;
        k.update(0, 0);
        assert_eq!(k, before);
    }

    #[test]
    fn a_fixed_length_does_not_move() {
        let mut k = GuessLength::new(4, false, 0.3);
        for _ in 0..10 {
            k.update(4, 0);
        }
        assert_eq!(k.next(), 4);
        assert_eq!(GuessLength::new(0, true, 0.3).next(), 0);
    }
}

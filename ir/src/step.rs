//! What one step of a loaded plan carries ([`Step`]), its shape ([`StepShape`]), and the
//! checks every backend runs on it before touching anything ([`StepLimits`]): one
//! implementation, so that every backend refuses the same steps with the same words.

use crate::backend::BackendError;
use crate::graph::Rows;
use crate::kv_layout::KvLayout;
use crate::op::Op;
use crate::plan::Plan;

/// A block-table entry for a page the sequence no longer holds: a sliding-window group's
/// page behind every query's window. Kernels never read it.
pub const NO_PAGE: u32 = u32::MAX;

/// Everything one step needs beyond the plan: the batch's tokens, where each belongs,
/// and the KV pages of each sequence. Several sequences of different lengths may share
/// a step (batched decode, chunked prefill).
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// (tokens) ids of the step's tokens, sequences one after another.
    pub token_ids: &'a [u32],
    /// (tokens) position of each token in its sequence.
    pub positions: &'a [u32],
    /// (tokens) index into `block_tables` of each token's sequence.
    pub token_seq: &'a [u32],
    /// (groups × seqs) pages of each sequence in each KV group, group-major: the table of
    /// sequence s in group g is `block_tables[g * n_seqs + s]`, with `n_groups` from the
    /// [`KvLayout`] (1 for most models, where this is one table per sequence). Entry i
    /// holds positions i·kv_page_size.. and every position up to this step's last is
    /// covered; a window group's entries behind every query's window may be [`NO_PAGE`].
    pub block_tables: &'a [&'a [u32]],
    /// (outputs) indices of the tokens whose logits are wanted.
    pub output_rows: &'a [u32],
}

impl Step<'_> {
    pub fn shape(&self) -> StepShape {
        StepShape {
            tokens: self.token_ids.len(),
            outputs: self.output_rows.len(),
        }
    }
}

/// How many rows a step gives each symbolic row count: what makes a plan's shapes
/// concrete (the arena range of a value, the logits a step returns, a grid's size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StepShape {
    pub tokens: usize,
    pub outputs: usize,
}

impl StepShape {
    /// Rows of a value whose rows are `rows` in a step of this shape.
    pub fn rows(self, rows: Rows) -> usize {
        match rows {
            Rows::Tokens => self.tokens,
            Rows::Outputs => self.outputs,
        }
    }
}

/// What the step check needs to know of a loaded plan and its KV pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepLimits {
    pub max_tokens: usize,
    pub max_outputs: usize,
    /// Rows of the embedding table: token ids must be below it.
    pub vocab: usize,
    pub kv_page_size: usize,
    pub kv_page_count: usize,
    /// Per KV group: the sliding window of its layers (None: full attention), which
    /// decides the pages a query reads.
    pub group_windows: Vec<Option<usize>>,
}

impl StepLimits {
    /// The limits of `plan` over a pool of `kv_page_count` pages of `kv`.
    pub fn new(plan: &Plan, kv: &KvLayout, kv_page_count: usize) -> StepLimits {
        let vocab = plan
            .launches
            .iter()
            .find_map(|l| match l.op {
                Op::Embed { table } => Some(plan.graph.weights[table.0 as usize].rows),
                _ => None,
            })
            .unwrap_or(0);
        let mut group_windows: Vec<Option<Option<usize>>> = vec![None; kv.n_groups().max(1)];
        for a in plan.launches.iter().filter_map(|l| l.op.attention()) {
            if let Some(w) = group_windows.get_mut(a.kv_group) {
                w.get_or_insert(a.window);
            }
        }
        StepLimits {
            max_tokens: plan.max_tokens,
            max_outputs: plan.max_outputs,
            vocab,
            kv_page_size: kv.kv_page_size(),
            kv_page_count,
            group_windows: group_windows.into_iter().map(Option::flatten).collect(),
        }
    }

    /// Check a step before anything runs: sizes, output rows, token ids, and every page
    /// attention will read (all pages up to each token's position must exist).
    pub fn check(&self, step: &Step<'_>, backend: &'static str) -> Result<(), BackendError> {
        self.reason(step).map_or(Ok(()), |reason| {
            Err(BackendError::BadStep { backend, reason })
        })
    }

    /// Check a KV page copy (copy-on-write): both pages must be in the pool.
    pub fn check_page_copy(
        &self,
        src: u32,
        dst: u32,
        backend: &'static str,
    ) -> Result<(), BackendError> {
        let n_pages = self.kv_page_count;
        if src as usize >= n_pages || dst as usize >= n_pages {
            return Err(BackendError::BadStep {
                backend,
                reason: format!("KV page copy {src} -> {dst} outside {n_pages} pages"),
            });
        }
        Ok(())
    }

    fn reason(&self, step: &Step<'_>) -> Option<String> {
        self.reason_counted(step, &mut 0)
    }

    /// [`Self::reason`], adding to `reads` the block-table entries it looks at: one pass
    /// over each table, then O(1) per (token, KV group), so a prefill chunk deep in a long
    /// context costs tokens + pages, not tokens × pages.
    fn reason_counted(&self, step: &Step<'_>, reads: &mut usize) -> Option<String> {
        let n = step.token_ids.len();
        if n == 0 || n > self.max_tokens {
            return Some(format!(
                "{n} tokens (the plan takes 1..={})",
                self.max_tokens
            ));
        }
        if step.positions.len() != n || step.token_seq.len() != n {
            return Some("positions and token_seq must have one entry per token".into());
        }
        let outs = step.output_rows.len();
        if outs > self.max_outputs || step.output_rows.iter().any(|&r| r as usize >= n) {
            return Some(format!("{outs} output rows, or one past the {n} tokens"));
        }
        if let Some(&id) = step.token_ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Some(format!(
                "token id {id} outside the vocabulary of {}",
                self.vocab
            ));
        }
        let page_size = self.kv_page_size.max(1);
        let n_groups = self.group_windows.len();
        if !step.block_tables.len().is_multiple_of(n_groups) {
            return Some(format!(
                "{} block tables for {n_groups} KV groups",
                step.block_tables.len()
            ));
        }
        let n_seqs = step.block_tables.len() / n_groups;
        // Per table: how many of its first i entries lie outside the pool (i = 0..=len).
        let outside_before: Vec<Vec<usize>> = step
            .block_tables
            .iter()
            .map(|table| {
                *reads += table.len();
                std::iter::once(0)
                    .chain(table.iter().scan(0, |outside, &p| {
                        *outside += usize::from(p as usize >= self.kv_page_count);
                        Some(*outside)
                    }))
                    .collect()
            })
            .collect();
        for (&pos, &seq) in step.positions.iter().zip(step.token_seq) {
            if seq as usize >= n_seqs {
                return Some(format!("sequence {seq} has no block table"));
            }
            let pos = pos as usize;
            for (g, &window) in self.group_windows.iter().enumerate() {
                let outside = &outside_before[g * n_seqs + seq as usize];
                // Every page a query at this position reads must exist.
                let first = window.map_or(0, |w| (pos + 1).saturating_sub(w)) / page_size;
                let last = pos / page_size;
                *reads += 2;
                if outside.len() <= last + 1 || outside[last + 1] > outside[first] {
                    let group = if n_groups > 1 {
                        format!(" in KV group {g}")
                    } else {
                        String::new()
                    };
                    return Some(format!(
                        "sequence {seq}: position {pos} is not covered by its pages{group}"
                    ));
                }
            }
        }
        None
    }
}

/// What [`argmax`] gives for a row holding a NaN or +∞: no token can be chosen from a
/// broken distribution, and the engine reports it as an error rather than decode one.
pub const NON_FINITE_ROW: u32 = u32::MAX;

/// The greedy token of one row of logits: the largest value, the lowest id on ties;
/// [`NON_FINITE_ROW`] when a value is NaN or +∞ (−∞ is a token that cannot win), and 0 for
/// an empty row. The host side of [`crate::backend::Backend::read_argmax`], and what a
/// device argmax must match.
pub fn argmax(row: &[f32]) -> u32 {
    if row.iter().any(|v| v.is_nan() || *v == f32::INFINITY) {
        return NON_FINITE_ROW;
    }
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// One of a row's most likely tokens, as a top-k hands them to the sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

impl Candidate {
    /// What fills a row of candidates whose logits hold a NaN or +∞.
    pub const NON_FINITE: Candidate = Candidate {
        id: NON_FINITE_ROW,
        logit: f32::NAN,
    };

    /// Larger logit first, then the lower id (−0 and +0 are equal, as [`argmax`] has
    /// them): the order of a top-k, total on rows without NaN.
    pub fn before(&self, other: &Candidate) -> std::cmp::Ordering {
        let by_logit = other.logit.partial_cmp(&self.logit);
        by_logit
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(self.id.cmp(&other.id))
    }
}

/// The `out.len()` largest logits of `row` with their ids, largest first and the lower id
/// first among equal logits (so the first is [`argmax`]'s, and the first k' of a top-k
/// are the top-k'); −∞ is a logit like another. Every candidate is
/// [`Candidate::NON_FINITE`] when the row holds a NaN or +∞. `out.len()` is at most
/// `row.len()`. The host side of [`crate::backend::Backend::read_top_k`], and what a
/// device top-k must match.
pub fn top_k(row: &[f32], out: &mut [Candidate]) {
    let k = out.len().min(row.len());
    if row.iter().any(|v| v.is_nan() || *v == f32::INFINITY) {
        out.fill(Candidate::NON_FINITE);
        return;
    }
    if k == 0 {
        return;
    }
    // One pass with a floor: each time 2k candidates are kept they are cut to the best k,
    // whose worst logit becomes the floor. A later logit at or below it cannot enter (ids
    // come in ascending order, so an equal one ranks after the kept one): about one
    // comparison per logit, not a 49,152-candidate select per row.
    let cap = (2 * k).max(64);
    let mut kept: Vec<Candidate> = Vec::with_capacity(cap.min(row.len()));
    let mut floor = None;
    for (i, &logit) in row.iter().enumerate() {
        if floor.is_some_and(|f| logit <= f) {
            continue;
        }
        kept.push(Candidate {
            id: i as u32,
            logit,
        });
        if kept.len() == cap {
            kept.select_nth_unstable_by(k - 1, Candidate::before);
            kept.truncate(k);
            floor = Some(kept[k - 1].logit);
        }
    }
    if kept.len() > k {
        kept.select_nth_unstable_by(k - 1, Candidate::before);
        kept.truncate(k);
    }
    kept.sort_unstable_by(Candidate::before);
    out[..k].copy_from_slice(&kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any row of numbers (few levels, so ties are common; some −∞ and −0): the top k
        /// is the first k of the whole row sorted by (logit desc, id asc), −0 = +0.
        #[test]
        fn top_k_is_the_prefix_of_the_sorted_row(
            levels in proptest::collection::vec(0u8..12, 1..600),
            k in 1usize..300,
        ) {
            let row: Vec<f32> = levels
                .iter()
                .map(|&l| match l {
                    0 => f32::NEG_INFINITY,
                    1 => -0.0,
                    l => f32::from(l) * 0.25 - 1.0,
                })
                .collect();
            let k = k.min(row.len());
            let mut out = vec![Candidate { id: 7777, logit: 1234.5 }; k];
            top_k(&row, &mut out);
            let mut ids: Vec<u32> = (0..row.len() as u32).collect();
            ids.sort_by(|&a, &b| {
                let (x, y) = (row[a as usize] + 0.0, row[b as usize] + 0.0);
                y.partial_cmp(&x).unwrap().then(a.cmp(&b))
            });
            for (c, &id) in out.iter().zip(&ids) {
                proptest::prop_assert_eq!(c.id, id);
                proptest::prop_assert_eq!(c.logit.to_bits(), row[id as usize].to_bits());
            }
        }
    }

    #[test]
    fn top_k_orders_by_logit_then_id_and_refuses_non_numbers() {
        let row = [1.0, 3.0, f32::NEG_INFINITY, 3.0, -0.0, 0.0, 2.0];
        let mut out = [Candidate::NON_FINITE; 4];
        top_k(&row, &mut out);
        let ids: Vec<u32> = out.iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 3, 6, 0]);
        assert_eq!(out[2].logit, 2.0);
        let mut all = [Candidate::NON_FINITE; 7];
        top_k(&row, &mut all);
        let ids: Vec<u32> = all.iter().map(|c| c.id).collect();
        // −0 and +0 tie (the lower id first), −∞ last.
        assert_eq!(ids, [1, 3, 6, 0, 4, 5, 2]);
        assert_eq!(all[0].id, argmax(&row));
        top_k(&[0.5, f32::INFINITY, 1.0], &mut out[..2]);
        assert!(
            out[..2]
                .iter()
                .all(|c| c.id == NON_FINITE_ROW && c.logit.is_nan())
        );
    }

    #[test]
    fn argmax_takes_the_lowest_id_on_ties_and_refuses_non_numbers() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -1.0, 7.5, 7.0]), 2);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NAN, 1.0, 5.0]), NON_FINITE_ROW);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), NON_FINITE_ROW);
        assert_eq!(argmax(&[-2.0, f32::INFINITY, -1.0]), NON_FINITE_ROW);
    }

    #[test]
    fn step_checks_name_what_is_wrong() {
        let limits = StepLimits {
            max_tokens: 4,
            max_outputs: 2,
            vocab: 10,
            kv_page_size: 16,
            kv_page_count: 2,
            group_windows: vec![None],
        };
        let table: &[u32] = &[1];
        let good = Step {
            token_ids: &[3, 9],
            positions: &[0, 15],
            token_seq: &[0, 0],
            block_tables: &[table],
            output_rows: &[1],
        };
        assert!(limits.check(&good, "test").is_ok());
        assert!(limits.check_page_copy(1, 0, "test").is_ok());
        assert!(limits.check_page_copy(2, 0, "test").is_err());
        let past_page = Step {
            positions: &[0, 16],
            ..good
        };
        let vocab = Step {
            token_ids: &[3, 10],
            ..good
        };
        let no_table = Step {
            token_seq: &[0, 1],
            ..good
        };
        for (step, words) in [
            (past_page, "position 16 is not covered"),
            (vocab, "token id 10 outside the vocabulary of 10"),
            (no_table, "sequence 1 has no block table"),
        ] {
            let err = limits.check(&step, "test").unwrap_err().to_string();
            assert!(err.contains(words), "{err}");
        }
    }

    /// A prefill chunk deep in a long context: the check reads each table once and each
    /// (token, group) in O(1), not every page below every token (512 × 532 entries here).
    #[test]
    fn step_check_work_is_tokens_plus_pages() {
        let (page_size, context, chunk) = (16, 8000, 512);
        let limits = StepLimits {
            max_tokens: chunk,
            max_outputs: 1,
            vocab: 10,
            kv_page_size: page_size,
            kv_page_count: 1 << 12,
            group_windows: vec![None, Some(100)],
        };
        let n_pages = (context + chunk).div_ceil(page_size);
        let full: Vec<u32> = (0..n_pages as u32).collect();
        // The window group has given back the pages no query of the chunk reads.
        let first_read = (context + 1 - 100) / page_size;
        let window: Vec<u32> = (0..n_pages as u32)
            .map(|p| {
                if (p as usize) < first_read {
                    NO_PAGE
                } else {
                    p
                }
            })
            .collect();
        let ids = vec![1u32; chunk];
        let positions: Vec<u32> = (context as u32..(context + chunk) as u32).collect();
        let seqs = vec![0u32; chunk];
        let step = Step {
            token_ids: &ids,
            positions: &positions,
            token_seq: &seqs,
            block_tables: &[&full, &window],
            output_rows: &[chunk as u32 - 1],
        };
        let mut reads = 0;
        assert_eq!(limits.reason_counted(&step, &mut reads), None);
        assert_eq!(reads, 2 * n_pages + 2 * 2 * chunk);
        // The same tables checked as before: a page the window still needs, missing.
        let mut holed = window.clone();
        holed[first_read] = NO_PAGE;
        let step = Step {
            block_tables: &[&full, &holed],
            ..step
        };
        let err = limits.check(&step, "test").unwrap_err().to_string();
        assert!(
            err.contains("position 8000 is not covered by its pages in KV group 1"),
            "{err}"
        );
    }
}

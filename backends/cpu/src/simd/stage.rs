//! Activations staged for the tile kernels: every Q8_0 / Q8_1 activation block of a
//! launch decoded once, before any tile runs, instead of once per tile of weight rows.
//!
//! Tokens go in groups of [`GROUP`]; a group's block `b` is one [`UNIT`]-byte unit:
//!
//! | bytes | what |
//! |---|---|
//! | `0 .. 32 * GROUP` | the 32 quants of each token, token after token |
//! | [`D_AT`] `..` | `d` of each token, f32 |
//! | [`S_AT`] `..` | `s` of each token, f32: what a weight block's minimum `m` is multiplied by |
//!
//! so a tile reads a token's quants with one load, and the `d`s and `s`s of the whole
//! group with one 128-bit load each.
//!
//! Whole runs of [`WIDE`] tokens are staged a second time, interleaved for the wide tiles
//! (after the groups, [`WIDE_UNIT`] bytes a (run, block)): bytes `32 k + 4 i ..+ 4` are
//! quants `4 k .. 4 k + 4` of token `i`, so that one `vpdpbusd` of a broadcast 4-byte
//! chunk of the weight block against 32 bytes gives the 8 tokens' partial dots in its 8
//! lanes (no reduction across lanes); then the 8 `d`s ([`W_D_AT`]) and `s`s ([`W_S_AT`]). `s = d * sum(y)`: stored in a Q8_1 block (Q4_1
//! weights), computed here for a Q8_0 block (Q4_0 weights, whose `-8` the kernels take
//! as a minimum `m = -8 d`; Q8_0 weights ignore it). The last group is padded with
//! zeros. A group's units are contiguous, so groups can be staged in parallel.

use half::f16;

/// Tokens of a group.
pub(super) const GROUP: usize = 4;
/// Byte offset of the `d`s in a unit.
pub(super) const D_AT: usize = 32 * GROUP;
/// Byte offset of the `s`s in a unit.
pub(super) const S_AT: usize = D_AT + 4 * GROUP;
/// Bytes of one (group, block) unit.
pub(super) const UNIT: usize = S_AT + 4 * GROUP;
/// Tokens of a wide run.
pub(super) const WIDE: usize = 8;
/// Byte offsets of the `d`s and `s`s in a wide unit, and its size.
pub(super) const W_D_AT: usize = 32 * WIDE;
pub(super) const W_S_AT: usize = W_D_AT + 4 * WIDE;
pub(super) const WIDE_UNIT: usize = W_S_AT + 4 * WIDE;

/// The 8-bit activation block formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)] // ggml's names
pub enum ActBlocks {
    /// d (f16), 32 quants.
    Q8_0,
    /// d, s (f16 each), 32 quants.
    Q8_1,
    /// d (f32), 256 quants, 16 block sums: read in place by the K-quant tiles, so
    /// nothing is staged (a [`Staged`] of Q8_K holds no bytes and has no tasks).
    Q8_K,
}

impl ActBlocks {
    pub fn block_bytes(self) -> usize {
        match self {
            ActBlocks::Q8_0 => kiln_ir::quant::q8_0::BLOCK_BYTES,
            ActBlocks::Q8_1 => kiln_ir::quant::q8_1::BLOCK_BYTES,
            ActBlocks::Q8_K => kiln_ir::quant::q8_k::BLOCK_BYTES,
        }
    }

    /// Whether blocks of this format are staged (Q8_0, Q8_1) or read in place (Q8_K).
    pub fn is_staged(self) -> bool {
        self != ActBlocks::Q8_K
    }
}

/// A launch's activations staged for the SIMD kernels: (groups, blocks) units.
#[derive(Debug, Clone)]
pub struct Staged {
    pub(super) format: ActBlocks,
    pub(super) n_tokens: usize,
    pub(super) blocks: usize,
    pub(super) bytes: Vec<u8>,
}

/// One parallel staging task: up to [`Staged::TASK_TOKENS`] tokens from `t0`, their two
/// groups' bytes and, for a whole run, the run's bytes.
#[derive(Debug)]
pub struct StageTask<'a> {
    pub t0: usize,
    pub n: usize,
    groups: &'a mut [u8],
    wide: Option<&'a mut [u8]>,
}

impl Staged {
    /// Room for `n_tokens` rows of `blocks` blocks, zeroed (the padding of the last
    /// group stays so).
    pub fn new(format: ActBlocks, n_tokens: usize, blocks: usize) -> Staged {
        let mut staged = Staged {
            format,
            n_tokens,
            blocks,
            bytes: Vec::new(),
        };
        staged.bytes.resize(staged.len(), 0);
        staged
    }

    /// Tokens a [`StageTask`] covers: one wide run, two groups.
    pub const TASK_TOKENS: usize = WIDE;

    fn groups_len(&self) -> usize {
        if !self.format.is_staged() {
            return 0;
        }
        self.n_tokens.div_ceil(GROUP) * self.blocks * UNIT
    }

    fn len(&self) -> usize {
        if !self.format.is_staged() {
            return 0;
        }
        self.groups_len() + self.n_tokens / WIDE * self.blocks * WIDE_UNIT
    }

    /// Byte offset of the wide runs.
    pub(super) fn wide_at(&self) -> usize {
        self.groups_len()
    }

    /// The staging tasks, each to run with [`Self::stage_task`] (in parallel if wanted);
    /// none for Q8_K.
    pub fn tasks(&mut self) -> Vec<StageTask<'_>> {
        if !self.format.is_staged() {
            return Vec::new();
        }
        let (n_tokens, blocks) = (self.n_tokens, self.blocks);
        let (mut groups, mut wide) = self
            .bytes
            .split_at_mut(n_tokens.div_ceil(GROUP) * blocks * UNIT);
        let mut tasks = Vec::new();
        for t0 in (0..n_tokens).step_by(WIDE) {
            let n = WIDE.min(n_tokens - t0);
            let (g, rest) =
                std::mem::take(&mut groups).split_at_mut(n.div_ceil(GROUP) * blocks * UNIT);
            groups = rest;
            let run = if n == WIDE {
                let (r, rest) = std::mem::take(&mut wide).split_at_mut(blocks * WIDE_UNIT);
                wide = rest;
                Some(r)
            } else {
                None
            };
            tasks.push(StageTask {
                t0,
                n,
                groups: g,
                wide: run,
            });
        }
        tasks
    }

    /// Stages one task: `rows` starts with its `n` tokens' activation rows (`row_bytes`
    /// apart, `blocks` blocks each).
    pub fn stage_task(format: ActBlocks, rows: &[u8], row_bytes: usize, task: &mut StageTask<'_>) {
        if !format.is_staged() {
            // Q8_K blocks are read in place (and `tasks` makes no task for them).
            return;
        }
        let act_bytes = format.block_bytes();
        let unit_blocks = task.groups.len() / UNIT / task.n.div_ceil(GROUP);
        for i in 0..task.n {
            let row = &rows[i * row_bytes..][..unit_blocks * act_bytes];
            let (group, lane) = (i / GROUP, i % GROUP);
            for (b, block) in row.chunks_exact(act_bytes).enumerate() {
                let d = f16_at(block, 0);
                let (quants, s) = match format {
                    ActBlocks::Q8_1 => (&block[4..36], f16_at(block, 2)),
                    ActBlocks::Q8_0 => {
                        let sum: i32 = block[2..34].iter().map(|&q| i32::from(q as i8)).sum();
                        (&block[2..34], d * sum as f32)
                    }
                    ActBlocks::Q8_K => unreachable!("returned above"),
                };
                let unit = &mut task.groups[(group * unit_blocks + b) * UNIT..][..UNIT];
                unit[32 * lane..][..32].copy_from_slice(quants);
                unit[D_AT + 4 * lane..][..4].copy_from_slice(&d.to_le_bytes());
                unit[S_AT + 4 * lane..][..4].copy_from_slice(&s.to_le_bytes());
                if let Some(wide) = task.wide.as_deref_mut() {
                    let unit = &mut wide[b * WIDE_UNIT..][..WIDE_UNIT];
                    for (k, chunk) in quants.chunks_exact(4).enumerate() {
                        unit[32 * k + 4 * i..][..4].copy_from_slice(chunk);
                    }
                    unit[W_D_AT + 4 * i..][..4].copy_from_slice(&d.to_le_bytes());
                    unit[W_S_AT + 4 * i..][..4].copy_from_slice(&s.to_le_bytes());
                }
            }
        }
    }

    /// Stages `n_tokens` rows (`row_bytes` apart, `blocks` blocks each) on this thread.
    pub fn from_rows(
        format: ActBlocks,
        rows: &[u8],
        row_bytes: usize,
        n_tokens: usize,
        blocks: usize,
    ) -> Staged {
        let mut staged = Staged::new(format, 0, 0);
        staged.restage(format, rows, row_bytes, n_tokens, blocks);
        staged
    }

    /// [`Self::from_rows`] into this buffer, reusing its allocation.
    pub(super) fn restage(
        &mut self,
        format: ActBlocks,
        rows: &[u8],
        row_bytes: usize,
        n_tokens: usize,
        blocks: usize,
    ) {
        (self.format, self.n_tokens, self.blocks) = (format, n_tokens, blocks);
        self.bytes.clear();
        self.bytes.resize(self.len(), 0);
        for mut task in self.tasks() {
            Staged::stage_task(format, &rows[task.t0 * row_bytes..], row_bytes, &mut task);
        }
    }
}

fn f16_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

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
//! group with one 128-bit load each. `s = d * sum(y)`: stored in a Q8_1 block (Q4_1
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

/// The 8-bit activation block formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActBlocks {
    /// d (f16), 32 quants.
    Q8_0,
    /// d, s (f16 each), 32 quants.
    Q8_1,
}

impl ActBlocks {
    pub fn block_bytes(self) -> usize {
        match self {
            ActBlocks::Q8_0 => kiln_ir::quant::q8_0::BLOCK_BYTES,
            ActBlocks::Q8_1 => kiln_ir::quant::q8_1::BLOCK_BYTES,
        }
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

impl Staged {
    /// Room for `n_tokens` rows of `blocks` blocks, zeroed (the padding of the last
    /// group stays so).
    pub fn new(format: ActBlocks, n_tokens: usize, blocks: usize) -> Staged {
        Staged {
            format,
            n_tokens,
            blocks,
            bytes: vec![0; n_tokens.div_ceil(GROUP) * blocks * UNIT],
        }
    }

    /// Tokens per group: the rows [`Self::groups_mut`] hands out each chunk for.
    pub const GROUP: usize = GROUP;

    /// Each group's bytes, to stage with [`Self::stage_group`] (in parallel if wanted).
    pub fn groups_mut(&mut self) -> std::slice::ChunksExactMut<'_, u8> {
        self.bytes.chunks_exact_mut((self.blocks * UNIT).max(1))
    }

    /// Stages one group: `rows` starts with its `n` tokens' activation rows (`n <=`
    /// [`GROUP`], `row_bytes` apart, as many blocks each as the group has units) and
    /// `group` is its chunk from [`Self::groups_mut`].
    pub fn stage_group(
        format: ActBlocks,
        rows: &[u8],
        row_bytes: usize,
        n: usize,
        group: &mut [u8],
    ) {
        let act_bytes = format.block_bytes();
        let blocks = group.len() / UNIT;
        for lane in 0..n.min(GROUP) {
            let row = &rows[lane * row_bytes..][..blocks * act_bytes];
            for (b, block) in row.chunks_exact(act_bytes).enumerate() {
                let unit = &mut group[b * UNIT..][..UNIT];
                let d = f16_at(block, 0);
                let (quants, s) = match format {
                    ActBlocks::Q8_1 => (&block[4..36], f16_at(block, 2)),
                    ActBlocks::Q8_0 => {
                        let sum: i32 = block[2..34].iter().map(|&q| i32::from(q as i8)).sum();
                        (&block[2..34], d * sum as f32)
                    }
                };
                unit[32 * lane..][..32].copy_from_slice(quants);
                unit[D_AT + 4 * lane..][..4].copy_from_slice(&d.to_le_bytes());
                unit[S_AT + 4 * lane..][..4].copy_from_slice(&s.to_le_bytes());
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
        self.bytes
            .resize(n_tokens.div_ceil(GROUP) * blocks * UNIT, 0);
        for (g, group) in self.groups_mut().enumerate() {
            let t0 = g * GROUP;
            let n = GROUP.min(n_tokens - t0);
            Staged::stage_group(format, &rows[t0 * row_bytes..], row_bytes, n, group);
        }
    }
}

fn f16_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

//! Causal grouped-query attention over paged KV (FP8 with per-(token, head) scales, or
//! F16), with an online softmax taken a block of 16 keys at a time. One task per (token,
//! KV head); the token at position p attends to positions 0..=p of its sequence, or
//! p + 1 − window..=p with a sliding window, reading the block tables of the layer's KV
//! group.

use crate::pool;
use kiln_ir::AttentionParams;
use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_ir::quant::fp8;
use std::sync::OnceLock;

/// Decoded values of all 256 FP8 E4M3 codes.
fn fp8_table() -> &'static [f32; 256] {
    static TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|c| fp8::decode(c as u8)))
}

/// A read-only view of the KV pages.
#[derive(Clone, Copy, Debug)]
pub struct KvPages<'a> {
    pub bytes: &'a [u8],
    pub layout: &'a KvLayout,
}

impl KvPages<'_> {
    /// Decode the head_dim values of K (`v = false`) or V of (page, slot, kv head).
    fn load(&self, layer: usize, page: usize, slot: usize, head: usize, v: bool, out: &mut [f32]) {
        let l = self.layout;
        let base = page * l.page_bytes();
        let (at, scale_at) = if v {
            (
                l.v_offset(layer, slot, head),
                l.v_scale_offset(layer, slot, head),
            )
        } else {
            (
                l.k_offset(layer, slot, head),
                l.k_scale_offset(layer, slot, head),
            )
        };
        let at = base + at.expect("slot inside the page");
        let n = out.len();
        match l.dtype() {
            KvDtype::F8E4M3 => {
                let s = base + scale_at.expect("fp8 has scales");
                let scale = f32::from_le_bytes(self.bytes[s..s + 4].try_into().expect("4 bytes"));
                let table = fp8_table();
                for (o, &c) in out.iter_mut().zip(&self.bytes[at..at + n]) {
                    *o = table[c as usize] * scale;
                }
            }
            KvDtype::F16 => {
                for (o, b) in out
                    .iter_mut()
                    .zip(self.bytes[at..at + 2 * n].chunks_exact(2))
                {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        }
    }
}

/// Query tokens of a prefill task, at most: each key and value is decoded once for all
/// of them.
const TOKENS_PER_TASK: usize = 16;

/// out, q: (tokens, n_heads·head_dim). Decode (a few tokens): one task per (token, KV
/// head). Prefill: one task per up to [`TOKENS_PER_TASK`] tokens, all KV heads; each key and value of a
/// sequence is decoded once per task and used by every query head and token of the task
/// that sees it. A (token, head)'s result takes the same operations in the same order
/// whatever its task, so a token's output does not depend on its batch. `block_tables`
/// are the step's, group-major (see `kiln_ir::backend::Step`).
pub fn attention(
    q: &[f32],
    kv: KvPages<'_>,
    params: &AttentionParams,
    positions: &[u32],
    token_seq: &[u32],
    block_tables: &[&[u32]],
    out: &mut [f32],
) {
    let hd = params.head_dim;
    let group = params.n_heads / params.n_kv_heads;
    let n_seqs = block_tables.len() / kv.layout.n_groups();
    let ctx = Ctx {
        q,
        kv,
        params,
        positions,
        token_seq,
        tables: &block_tables[params.kv_group * n_seqs..][..n_seqs], // (seqs) this group's
        hd,
        group,
    };
    let row = params.n_heads * hd;
    let n_tokens = out.len() / row;
    // Enough tasks for every thread (a batch of decoded sequences: one token each).
    let per_task = TOKENS_PER_TASK.min(n_tokens / (2 * pool::n_threads().max(1)));
    if per_task <= 1 {
        let mut tasks: Vec<&mut [f32]> = out.chunks_mut(group * hd).collect(); // (token, kv head)
        pool::for_each_mut(&mut tasks, |i, o| {
            let (t, kv_head) = (i / params.n_kv_heads, i % params.n_kv_heads);
            ctx.attend(t..t + 1, kv_head, o);
        });
        return;
    }
    let mut tasks: Vec<&mut [f32]> = out.chunks_mut(per_task * row).collect();
    pool::for_each_mut(&mut tasks, |i, o| {
        let t0 = i * per_task;
        let tokens = t0..t0 + o.len() / row;
        let mut head_out = vec![0.0f32; tokens.len() * group * hd]; // (tokens, group, hd)
        for kv_head in 0..params.n_kv_heads {
            ctx.attend(tokens.clone(), kv_head, &mut head_out);
            for (o_row, h_row) in o
                .chunks_exact_mut(row)
                .zip(head_out.chunks_exact(group * hd))
            {
                o_row[kv_head * group * hd..][..group * hd].copy_from_slice(h_row);
            }
        }
    });
}

/// One launch's operands.
struct Ctx<'a> {
    q: &'a [f32],
    kv: KvPages<'a>,
    params: &'a AttentionParams,
    positions: &'a [u32],
    token_seq: &'a [u32],
    /// (seqs) this KV group's block tables.
    tables: &'a [&'a [u32]],
    hd: usize,
    group: usize,
}

/// Keys a block takes together: their scores, one softmax rescale, then their weighted
/// values. Blocks start at multiples of KEY_BLOCK positions, so the blocks of a token (and
/// with them its bits) do not depend on the tokens it runs with.
const KEY_BLOCK: usize = 16;

impl Ctx<'_> {
    /// o (tokens, group, head_dim): the query heads of `kv_head` for `tokens`, each
    /// run of tokens of one sequence reading that sequence's keys once.
    fn attend(&self, tokens: std::ops::Range<usize>, kv_head: usize, o: &mut [f32]) {
        let (hd, group) = (self.hd, self.group);
        let n_heads = self.params.n_heads;
        let page_size = self.kv.layout.kv_page_size();
        let scale = self.params.scale;
        let mut k = vec![0.0f32; KEY_BLOCK * hd]; // (KEY_BLOCK, head_dim) the block's keys
        let mut v = vec![0.0f32; KEY_BLOCK * hd]; // (KEY_BLOCK, head_dim) its values
        let mut p = [0.0f32; KEY_BLOCK]; // (KEY_BLOCK) one head's scores, then weights
        o.fill(0.0);
        let mut a = tokens.start;
        while a < tokens.end {
            let seq = self.token_seq[a];
            let b = (a..tokens.end)
                .find(|&t| self.token_seq[t] != seq)
                .unwrap_or(tokens.end);
            let run = b - a;
            let mut max = vec![f32::NEG_INFINITY; run * group]; // (run, group) running max
            let mut sum = vec![0.0f32; run * group]; // (run, group) softmax denominator
            let last = |t: usize| self.positions[t] as usize;
            let first = |t: usize| self.params.first_position(last(t));
            let lo = (a..b).map(first).min().unwrap_or(0);
            let hi = (a..b).map(last).max().unwrap_or(0);
            let table = self.tables[seq as usize];
            for start in (lo / KEY_BLOCK * KEY_BLOCK..=hi).step_by(KEY_BLOCK) {
                let end = (start + KEY_BLOCK).min(hi + 1); // positions start..end
                for pos in start.max(lo)..end {
                    let (page, slot) = (table[pos / page_size] as usize, pos % page_size);
                    let j = (pos - start) * hd;
                    let kv_slot = self.params.kv_slot;
                    let (kj, vj) = (&mut k[j..j + hd], &mut v[j..j + hd]);
                    self.kv.load(kv_slot, page, slot, kv_head, false, kj);
                    self.kv.load(kv_slot, page, slot, kv_head, true, vj);
                }
                for t in a..b {
                    // The keys of the block this token sees.
                    let (from, to) = (first(t).max(start), (last(t) + 1).min(end));
                    if from >= to {
                        continue;
                    }
                    let keys = from - start..to - start;
                    let i = t - a;
                    let q0 = (t * n_heads + kv_head * group) * hd;
                    let qg = &self.q[q0..q0 + group * hd]; // (group, head_dim)
                    let og = &mut o[(t - tokens.start) * group * hd..][..group * hd];
                    for g in 0..group {
                        let qh = &qg[g * hd..(g + 1) * hd];
                        let mut block_max = f32::NEG_INFINITY;
                        for j in keys.clone() {
                            p[j] = kiln_ir::quant::dot_f32(qh, &k[j * hd..(j + 1) * hd]) * scale;
                            block_max = block_max.max(p[j]);
                        }
                        // Online softmax, once per block: rescale what was accumulated
                        // when the maximum grows (exp(0) is 1 exactly, so skipping it
                        // gives the same bits).
                        let m = &mut max[i * group + g];
                        let new_max = m.max(block_max);
                        let correction = if new_max == *m && m.is_finite() {
                            1.0
                        } else {
                            (*m - new_max).exp()
                        };
                        let mut block_sum = 0.0;
                        for w in &mut p[keys.clone()] {
                            *w = (*w - new_max).exp();
                            block_sum += *w;
                        }
                        let sg = &mut sum[i * group + g];
                        *sg = *sg * correction + block_sum;
                        let vs = &v[keys.start * hd..keys.end * hd];
                        weighted_sum(
                            &mut og[g * hd..(g + 1) * hd],
                            correction,
                            &p[keys.clone()],
                            vs,
                        );
                        *m = new_max;
                    }
                }
            }
            for t in a..b {
                let og = &mut o[(t - tokens.start) * group * hd..][..group * hd];
                for (g, head) in og.chunks_exact_mut(hd).enumerate() {
                    let s = sum[(t - a) * group + g];
                    head.iter_mut().for_each(|ov| *ov /= s);
                }
            }
            a = b;
        }
    }
}

/// o = o · c + Σ_j w_j · v_j (v: (w.len(), o.len())), element by element in key order: a
/// multiply and an add each (no fused multiply-add, so every path gives the same bits).
fn weighted_sum(o: &mut [f32], c: f32, w: &[f32], v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { weighted_sum_avx2(o, c, w, v) };
        return;
    }
    weighted_sum_plain(o, c, w, v);
}

/// Columns a pass of [`weighted_sum_plain`] keeps in registers: eight 8-wide vectors.
const COLUMNS: usize = 64;

#[inline(always)]
fn weighted_sum_plain(o: &mut [f32], c: f32, w: &[f32], v: &[f32]) {
    let hd = o.len();
    let mut c0 = 0;
    // Whole passes of COLUMNS: the accumulators stay in registers over every key.
    while c0 + COLUMNS <= hd {
        let mut acc: [f32; COLUMNS] = o[c0..c0 + COLUMNS].try_into().expect("COLUMNS");
        acc.iter_mut().for_each(|x| *x *= c);
        for (j, &wj) in w.iter().enumerate() {
            let vj: &[f32; COLUMNS] = v[j * hd + c0..][..COLUMNS].try_into().expect("COLUMNS");
            for (x, &y) in acc.iter_mut().zip(vj) {
                *x += wj * y;
            }
        }
        o[c0..c0 + COLUMNS].copy_from_slice(&acc);
        c0 += COLUMNS;
    }
    // The rest (a head size not a multiple of COLUMNS): the same operations per element.
    for (i, x) in o.iter_mut().enumerate().skip(c0) {
        let mut acc = *x * c;
        for (j, &wj) in w.iter().enumerate() {
            acc += wj * v[j * hd + i];
        }
        *x = acc;
    }
}

/// [`weighted_sum_plain`] compiled for AVX2: LLVM vectorizes the same loops 8 wide (it
/// does not contract the multiply and add without a fast-math flag).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn weighted_sum_avx2(o: &mut [f32], c: f32, w: &[f32], v: &[f32]) {
    weighted_sum_plain(o, c, w, v);
}

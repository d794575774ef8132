//! Causal grouped-query attention over paged KV (FP8 with per-(token, head) scales, or
//! F16), with an online softmax. One task per (token, KV head); the token at position
//! p attends to positions 0..=p of its sequence, or p + 1 − window..=p with a sliding
//! window, reading the block tables of the layer's KV group.

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

impl Ctx<'_> {
    /// o (tokens, group, head_dim): the query heads of `kv_head` for `tokens`, each
    /// run of tokens of one sequence reading that sequence's keys once.
    fn attend(&self, tokens: std::ops::Range<usize>, kv_head: usize, o: &mut [f32]) {
        let (hd, group) = (self.hd, self.group);
        let n_heads = self.params.n_heads;
        let page_size = self.kv.layout.kv_page_size();
        let scale = self.params.scale;
        let mut k = vec![0.0f32; hd]; // (head_dim) one decoded key
        let mut v = vec![0.0f32; hd]; // (head_dim) one decoded value
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
            for pos in lo..=hi {
                let (page, slot) = (table[pos / page_size] as usize, pos % page_size);
                self.kv
                    .load(self.params.kv_slot, page, slot, kv_head, false, &mut k);
                self.kv
                    .load(self.params.kv_slot, page, slot, kv_head, true, &mut v);
                for t in a..b {
                    if pos < first(t) || pos > last(t) {
                        continue;
                    }
                    let i = t - a;
                    let q0 = (t * n_heads + kv_head * group) * hd;
                    let qg = &self.q[q0..q0 + group * hd]; // (group, head_dim)
                    let og = &mut o[(t - tokens.start) * group * hd..][..group * hd];
                    for g in 0..group {
                        let s = kiln_ir::quant::dot_f32(&qg[g * hd..(g + 1) * hd], &k) * scale;
                        // Online softmax: rescale what was accumulated when the maximum
                        // grows.
                        let m = &mut max[i * group + g];
                        let new_max = m.max(s);
                        // exp(0) is 1 exactly: most keys leave the maximum as it is,
                        // and skipping their exp gives the same bits.
                        let correction = if new_max == *m && m.is_finite() {
                            1.0
                        } else {
                            (*m - new_max).exp()
                        };
                        let p = (s - new_max).exp();
                        let sg = &mut sum[i * group + g];
                        *sg = *sg * correction + p;
                        scale_add(&mut og[g * hd..(g + 1) * hd], correction, p, &v);
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

/// o = o · c + p · v, element by element: a multiply, a multiply and an add each (no
/// fused multiply-add, so every path gives the same bits).
fn scale_add(o: &mut [f32], c: f32, p: f32, v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { scale_add_avx2(o, c, p, v) };
        return;
    }
    scale_add_plain(o, c, p, v);
}

#[inline(always)]
fn scale_add_plain(o: &mut [f32], c: f32, p: f32, v: &[f32]) {
    for (ov, &vv) in o.iter_mut().zip(v) {
        *ov = *ov * c + p * vv;
    }
}

/// [`scale_add_plain`] compiled for AVX2: LLVM vectorizes the same loop 8 wide (it does
/// not contract the multiply and add without a fast-math flag).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scale_add_avx2(o: &mut [f32], c: f32, p: f32, v: &[f32]) {
    scale_add_plain(o, c, p, v);
}

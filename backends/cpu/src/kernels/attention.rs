//! Causal grouped-query attention over paged KV (FP8 with per-(token, head) scales, or
//! F16), with an online softmax, split over context chunks when decoding; the token at position
//! p attends to positions 0..=p of its sequence.

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

/// Positions per context chunk, and the most chunks one (token, KV head) pair is split
/// into. The split depends only on the pair's own context length, never on what else is
/// in the step, so a sequence gets bit-identical results alone or batched.
const CHUNK_POSITIONS: usize = 64;
const MAX_CHUNKS: usize = 8;

/// out, q: (tokens, n_heads·head_dim). A task is a chunk of the context of a (token, KV
/// head) pair, so each key and value is decoded once and used by all the query heads that
/// share it; the chunks' partial softmax states are merged afterwards (flash-decoding), so
/// a decode step with few KV heads still spreads over every thread.
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
    let n_pairs = positions.len() * params.n_kv_heads;
    let context = |pair: usize| positions[pair / params.n_kv_heads] as usize + 1;
    let n_chunks = |len: usize| len.div_ceil(CHUNK_POSITIONS).clamp(1, MAX_CHUNKS);
    // (pair, positions) of every task, pair by pair.
    let mut tasks: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    for pair in 0..n_pairs {
        let len = context(pair);
        let per_chunk = len.div_ceil(n_chunks(len));
        tasks.extend(
            (0..len)
                .step_by(per_chunk)
                .map(|p0| (pair, p0..(p0 + per_chunk).min(len))),
        );
    }
    let mut partials: Vec<Partial> = tasks.iter().map(|_| Partial::new(group, hd)).collect();
    pool::for_each_mut(&mut partials, |i, part| {
        let (pair, range) = &tasks[i];
        let (t, kv_head) = (pair / params.n_kv_heads, pair % params.n_kv_heads);
        let qg = &q[pair * group * hd..(pair + 1) * group * hd]; // (group, head_dim)
        let table = block_tables[token_seq[t] as usize];
        part.attend(qg, kv, params, table, kv_head, range.clone());
    });
    let mut first = 0;
    for (pair, o) in out.chunks_exact_mut(group * hd).enumerate() {
        let n = tasks[first..]
            .iter()
            .take_while(|(p, _)| *p == pair)
            .count();
        merge(&partials[first..first + n], group, hd, o);
        first += n;
    }
}

/// The online-softmax state of one (token, KV head) pair over a range of positions.
struct Partial {
    max: Vec<f32>, // (group) running max score
    sum: Vec<f32>, // (group) running softmax denominator
    acc: Vec<f32>, // (group, head_dim) unnormalized weighted sum of values
}

impl Partial {
    fn new(group: usize, hd: usize) -> Partial {
        Partial {
            max: vec![f32::NEG_INFINITY; group],
            sum: vec![0.0; group],
            acc: vec![0.0; group * hd],
        }
    }

    fn attend(
        &mut self,
        qg: &[f32],
        kv: KvPages<'_>,
        params: &AttentionParams,
        table: &[u32],
        kv_head: usize,
        range: std::ops::Range<usize>,
    ) {
        let hd = params.head_dim;
        let page_size = kv.layout.kv_page_size();
        let scale = 1.0 / (hd as f32).sqrt();
        let mut k = vec![0.0f32; hd]; // (head_dim) one decoded key
        let mut v = vec![0.0f32; hd]; // (head_dim) one decoded value
        for pos in range {
            let (page, slot) = (table[pos / page_size] as usize, pos % page_size);
            kv.load(params.layer, page, slot, kv_head, false, &mut k);
            kv.load(params.layer, page, slot, kv_head, true, &mut v);
            for (g, q_head) in qg.chunks_exact(hd).enumerate() {
                let s = kiln_ir::quant::dot_f32(q_head, &k) * scale;
                // Online softmax: rescale what was accumulated when the maximum grows.
                let new_max = self.max[g].max(s);
                let correction = (self.max[g] - new_max).exp();
                let p = (s - new_max).exp();
                self.sum[g] = self.sum[g] * correction + p;
                for (a, &vv) in self.acc[g * hd..(g + 1) * hd].iter_mut().zip(&v) {
                    *a = *a * correction + p * vv;
                }
                self.max[g] = new_max;
            }
        }
    }
}

/// o (group, head_dim) = the softmax-weighted values of all chunks of one pair.
fn merge(parts: &[Partial], group: usize, hd: usize, o: &mut [f32]) {
    for g in 0..group {
        let max = parts.iter().fold(f32::NEG_INFINITY, |m, p| m.max(p.max[g]));
        let o_head = &mut o[g * hd..(g + 1) * hd];
        o_head.fill(0.0);
        let mut sum = 0.0;
        for part in parts.iter().filter(|p| p.sum[g] > 0.0) {
            let weight = (part.max[g] - max).exp();
            sum += part.sum[g] * weight;
            for (ov, &a) in o_head.iter_mut().zip(&part.acc[g * hd..(g + 1) * hd]) {
                *ov += a * weight;
            }
        }
        o_head.iter_mut().for_each(|ov| *ov /= sum);
    }
}

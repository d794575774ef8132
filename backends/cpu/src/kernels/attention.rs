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

/// out, q: (tokens, n_heads·head_dim). One task per (token, KV head): each key and
/// value is decoded once and used by all the query heads that share it. `block_tables`
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
    let page_size = kv.layout.kv_page_size();
    let scale = params.scale;
    let n_seqs = block_tables.len() / kv.layout.n_groups();
    let tables = &block_tables[params.kv_group * n_seqs..][..n_seqs]; // (seqs) this group's
    let mut tasks: Vec<&mut [f32]> = out.chunks_mut(group * hd).collect(); // (token, kv head)
    pool::for_each_mut(&mut tasks, |i, o| {
        let o: &mut [f32] = o;
        let (t, kv_head) = (i / params.n_kv_heads, i % params.n_kv_heads);
        let qg = &q[i * group * hd..(i + 1) * group * hd]; // (group, head_dim)
        let table = tables[token_seq[t] as usize];
        let mut k = vec![0.0f32; hd]; // (head_dim) one decoded key
        let mut v = vec![0.0f32; hd]; // (head_dim) one decoded value
        let mut max = vec![f32::NEG_INFINITY; group]; // (group) running max score
        let mut sum = vec![0.0f32; group]; // (group) running softmax denominator
        o.fill(0.0);
        let last = positions[t] as usize;
        for pos in params.first_position(last)..=last {
            let (page, slot) = (table[pos / page_size] as usize, pos % page_size);
            kv.load(params.kv_slot, page, slot, kv_head, false, &mut k);
            kv.load(params.kv_slot, page, slot, kv_head, true, &mut v);
            for g in 0..group {
                let s = kiln_ir::quant::dot_f32(&qg[g * hd..(g + 1) * hd], &k) * scale;
                // Online softmax: rescale what was accumulated when the maximum grows.
                let new_max = max[g].max(s);
                let correction = (max[g] - new_max).exp();
                let p = (s - new_max).exp();
                sum[g] = sum[g] * correction + p;
                for (ov, &vv) in o[g * hd..(g + 1) * hd].iter_mut().zip(&v) {
                    *ov = *ov * correction + p * vv;
                }
                max[g] = new_max;
            }
        }
        for (g, head) in o.chunks_exact_mut(hd).enumerate() {
            head.iter_mut().for_each(|ov| *ov /= sum[g]);
        }
    });
}

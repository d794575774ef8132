//! QK-norm, RoPE and the KV page write: q_out = rope(norm(q)); rope(norm(k)) and v go to
//! the pages.

use super::head_rmsnorm::head_rmsnorm;
use super::kv_write::KvTarget;
use super::rope::{RopeTable, rope_in_place};

/// The QK-norm weights (head_dim each) and their epsilon.
#[derive(Clone, Copy, Debug)]
pub struct QkNorm<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub eps: f32,
}

pub fn qk_norm_rope_kv_write(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    norm: QkNorm<'_>,
    table: &RopeTable,
    target: KvTarget<'_, '_>,
    q_out: &mut [f32],
) {
    head_rmsnorm(q, norm.q, norm.eps, q_out);
    rope_in_place(q_out, norm.q.len(), table);
    let mut k_out = vec![0.0f32; k.len()]; // (tokens, kv_dim)
    head_rmsnorm(k, norm.k, norm.eps, &mut k_out);
    rope_in_place(&mut k_out, norm.k.len(), table);
    target.write(&k_out, v);
}

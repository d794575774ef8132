//! RoPE of q and k with the KV page write: q_out = rope(q); rope(k) and v go to the pages.

use super::kv_write::KvTarget;
use super::rope::{RopeTable, rope, rope_in_place};

pub fn rope_kv_write(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    table: &RopeTable,
    target: KvTarget<'_, '_>,
    q_out: &mut [f32],
) {
    let hd = target.layout.head_dim();
    rope(q, hd, table, q_out);
    let mut k_roped = k.to_vec(); // (tokens, kv_dim)
    rope_in_place(&mut k_roped, hd, table);
    target.write(&k_roped, v);
}

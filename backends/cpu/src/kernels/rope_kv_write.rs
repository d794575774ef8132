//! RoPE of q and k with the KV page write: q_out = rope(q); rope(k) and v go to the pages.

use kiln_ir::kv_layout::KvLayout;

use super::kv_write::kv_write;
use super::rope::{RopeTable, rope, rope_in_place};

#[allow(clippy::too_many_arguments)]
pub fn rope_kv_write(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    table: &RopeTable,
    pages: &mut [u8],
    layout: &KvLayout,
    layer: usize,
    slots: &[(usize, usize)],
    q_out: &mut [f32],
) {
    let hd = layout.head_dim();
    rope(q, hd, table, q_out);
    let mut k_roped = k.to_vec(); // (tokens, kv_dim)
    rope_in_place(&mut k_roped, hd, table);
    kv_write(pages, layout, layer, slots, &k_roped, v);
}

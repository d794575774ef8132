//! Store k and v rows of a step into their KV page slots: FP8 E4M3 with one f32 scale per
//! (token, KV head) (scale = max|x| / 448, so the largest value uses the full range), or F16.

use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_ir::quant::fp8;

/// Where each token of the step goes in one KV group: (page, slot in page). `tables` are
/// the group's block tables, one per sequence.
pub fn token_slots(
    positions: &[u32],
    token_seq: &[u32],
    tables: &[&[u32]],
    kv_page_size: usize,
) -> Vec<(usize, usize)> {
    positions
        .iter()
        .zip(token_seq)
        .map(|(&pos, &seq)| {
            let pos = pos as usize;
            (
                tables[seq as usize][pos / kv_page_size] as usize,
                pos % kv_page_size,
            )
        })
        .collect()
}

/// Where a launch writes K/V: the pages, their layout, the layer's slot within a page, and
/// each token's (page, position in page).
pub struct KvTarget<'p, 's> {
    pub pages: &'p mut [u8],
    pub layout: &'s KvLayout,
    pub layer_slot: usize,
    pub slots: &'s [(usize, usize)],
}

impl std::fmt::Debug for KvTarget<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvTarget")
            .field("layer_slot", &self.layer_slot)
            .field("tokens", &self.slots.len())
            .finish()
    }
}

impl KvTarget<'_, '_> {
    /// k, v: (tokens, n_kv_heads·head_dim).
    pub fn write(self, k: &[f32], v: &[f32]) {
        let layout = self.layout;
        let (layer, hd) = (self.layer_slot, layout.head_dim());
        let kv_dim = layout.n_kv_heads() * hd;
        let page_bytes = layout.page_bytes();
        for (t, &(page, slot)) in self.slots.iter().enumerate() {
            let page = &mut self.pages[page * page_bytes..(page + 1) * page_bytes];
            for h in 0..layout.n_kv_heads() {
                let k_row = &k[t * kv_dim + h * hd..][..hd];
                let v_row = &v[t * kv_dim + h * hd..][..hd];
                let k_at = layout
                    .k_offset(layer, slot, h)
                    .expect("slot inside the page");
                let v_at = layout
                    .v_offset(layer, slot, h)
                    .expect("slot inside the page");
                match layout.dtype() {
                    KvDtype::F8E4M3 => {
                        let ks = store_fp8(&mut page[k_at..k_at + hd], k_row);
                        let vs = store_fp8(&mut page[v_at..v_at + hd], v_row);
                        let k_scale = layout
                            .k_scale_offset(layer, slot, h)
                            .expect("fp8 has scales");
                        let v_scale = layout
                            .v_scale_offset(layer, slot, h)
                            .expect("fp8 has scales");
                        page[k_scale..k_scale + 4].copy_from_slice(&ks.to_le_bytes());
                        page[v_scale..v_scale + 4].copy_from_slice(&vs.to_le_bytes());
                    }
                    KvDtype::F16 => {
                        store_f16(&mut page[k_at..k_at + 2 * hd], k_row);
                        store_f16(&mut page[v_at..v_at + 2 * hd], v_row);
                    }
                }
            }
        }
    }
}

/// k, v: (tokens, n_kv_heads·head_dim).
pub fn kv_write(target: KvTarget<'_, '_>, k: &[f32], v: &[f32]) {
    target.write(k, v);
}

/// Encode one head's values; returns the scale to multiply decoded values by. A NaN makes
/// the scale NaN, so that a broken model's non-numbers reach the logits (where the engine
/// refuses them) instead of being stored as zeros.
fn store_fp8(dst: &mut [u8], x: &[f32]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| {
        if m.is_nan() || v.is_nan() {
            f32::NAN
        } else {
            m.max(v.abs())
        }
    });
    let scale = if amax.is_nan() {
        f32::NAN
    } else if amax > 0.0 {
        amax / fp8::MAX
    } else {
        1.0
    };
    for (d, &v) in dst.iter_mut().zip(x) {
        *d = fp8::encode(v / scale);
    }
    scale
}

fn store_f16(dst: &mut [u8], x: &[f32]) {
    for (d, &v) in dst.chunks_exact_mut(2).zip(x) {
        d.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_reaches_the_scale_and_numbers_do_not() {
        let mut dst = [0xAAu8; 4];
        let scale = store_fp8(&mut dst, &[1.0, -2.0, 0.5, 448.0]);
        assert_eq!(scale, 1.0);
        assert!(store_fp8(&mut dst, &[1.0, f32::NAN, 0.5, 2.0]).is_nan());
        assert!(store_fp8(&mut dst, &[f32::NAN, 1.0, 0.5, 2.0]).is_nan());
        assert_eq!(store_fp8(&mut dst, &[0.0; 4]), 1.0);
    }
}

//! KV page copies as a device does them: which byte ranges of a page hold its first
//! `n` token slots (copy-on-write copies only what was written).

use kiln_ir::kv_layout::KvLayout;

/// The byte ranges within a page, (offset, length), that hold its first `n_tokens` token
/// slots in every layer: K values, V values and, for FP8, the K and V scales. The whole
/// page as one range when it is full; nothing for no tokens.
pub fn leading_slots(kv: &KvLayout, n_tokens: usize) -> Vec<(u64, u64)> {
    let n = n_tokens.min(kv.kv_page_size());
    if n == kv.kv_page_size() {
        return vec![(0, kv.page_bytes() as u64)];
    }
    let heads = kv.n_kv_heads();
    let values = n * heads * kv.head_dim() * kv.dtype().value_bytes();
    let mut out = Vec::new();
    for layer in 0..kv.n_layers() {
        for (offset, size) in [
            (kv.k_offset(layer, 0, 0), values),
            (kv.v_offset(layer, 0, 0), values),
            (kv.k_scale_offset(layer, 0, 0), n * heads * 4),
            (kv.v_scale_offset(layer, 0, 0), n * heads * 4),
        ] {
            if let Some(offset) = offset.filter(|_| size > 0) {
                out.push((offset as u64, size as u64));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_pages_take_the_leading_slots_of_every_region() {
        let kv = KvLayout::new(2, 3, 64).unwrap(); // FP8: values and scales
        let pb = kv.page_bytes() as u64;
        assert_eq!(leading_slots(&kv, 16), vec![(0, pb)]);
        assert_eq!(leading_slots(&kv, 99), vec![(0, pb)]);
        let part = leading_slots(&kv, 5);
        assert_eq!(part.len(), 2 * 4);
        assert_eq!(part[0], (0, 5 * 3 * 64));
        assert_eq!(part[1].0, kv.v_offset(0, 0, 0).unwrap() as u64);
        assert_eq!(part[2].1, 5 * 3 * 4);
        let f16 = kv.with_dtype(kiln_ir::kv_layout::KvDtype::F16).unwrap();
        assert_eq!(leading_slots(&f16, 3).len(), 2 * 2);
        assert!(leading_slots(&kv, 0).is_empty());
    }
}

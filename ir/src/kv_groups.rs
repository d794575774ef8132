//! Which layers share KV pages. A page holds `kv_page_size` positions of one sequence for
//! the layers of one *KV group*; every layer of a group attends alike (the same sliding
//! window, or none), so a sequence can hand a window group's pages back to the pool once no
//! query can read them any more, while a full-attention group keeps all of its pages. Each
//! group has its own block table per sequence (a step carries them group-major, see
//! [`crate::backend::Step`]); the pages of all groups have one size and come from one pool.
//!
//! Every group holds `layers_per_page` layers: the greatest common divisor of the numbers
//! of layers of each kind, so that no page slot is wasted. A model whose layers all attend
//! alike (Llama) has one group of every layer with slot = layer, the layout of
//! [`crate::kv_layout`] as it always was. Gemma 3 270M (15 window layers, 3 global ones):
//! pages of 3 layers, group 0 the global layers 5, 11 and 17, groups 1–5 the window
//! layers in order (0–2, 3, 4, 6, …).

use crate::kv_layout::{KvLayout, KvLayoutError};

/// The KV groups of a model: how many layers a page holds, each group's window, and where
/// each layer's K/V live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvGroups {
    layers_per_page: usize,
    /// Per group: the sliding window of its layers (None: full attention).
    windows: Vec<Option<usize>>,
    /// Per layer: (group, slot within the group's pages).
    placement: Vec<(usize, usize)>,
}

impl KvGroups {
    /// Groups for layers attending with these windows (None: full attention). Full
    /// attention comes first (group 0), then the windows from the smallest; layers keep
    /// their order within a kind.
    pub fn new(layer_windows: &[Option<usize>]) -> Result<KvGroups, KvLayoutError> {
        if layer_windows.is_empty() {
            return Err(KvLayoutError(
                "a model without layers has no KV groups".into(),
            ));
        }
        if layer_windows.contains(&Some(0)) {
            return Err(KvLayoutError(
                "a sliding window of 0 positions attends to nothing".into(),
            ));
        }
        let mut kinds: Vec<Option<usize>> = layer_windows.to_vec();
        kinds.sort(); // None < Some(_), windows ascending
        kinds.dedup();
        let layers_of = |kind: Option<usize>| {
            (0..layer_windows.len()).filter(move |&l| layer_windows[l] == kind)
        };
        let layers_per_page = kinds.iter().map(|&k| layers_of(k).count()).fold(0, gcd);
        let mut windows = Vec::new();
        let mut placement = vec![(0, 0); layer_windows.len()];
        for &kind in &kinds {
            for (i, layer) in layers_of(kind).enumerate() {
                if i % layers_per_page == 0 {
                    windows.push(kind);
                }
                placement[layer] = (windows.len() - 1, i % layers_per_page);
            }
        }
        Ok(KvGroups {
            layers_per_page,
            windows,
            placement,
        })
    }

    /// One group of `n_layers` full-attention layers (slot = layer).
    pub fn uniform(n_layers: usize) -> Result<KvGroups, KvLayoutError> {
        KvGroups::new(&vec![None; n_layers])
    }

    pub fn layers_per_page(&self) -> usize {
        self.layers_per_page
    }

    pub fn n_groups(&self) -> usize {
        self.windows.len()
    }

    pub fn n_layers(&self) -> usize {
        self.placement.len()
    }

    /// Per group: its window (None: full attention).
    pub fn windows(&self) -> &[Option<usize>] {
        &self.windows
    }

    /// (group, slot) of `layer`'s K/V; None for a layer the model does not have.
    pub fn placement(&self, layer: usize) -> Option<(usize, usize)> {
        self.placement.get(layer).copied()
    }

    /// The page geometry of these groups (FP8 values, pages of the default size).
    pub fn layout(&self, n_kv_heads: usize, head_dim: usize) -> Result<KvLayout, KvLayoutError> {
        KvLayout::new(self.layers_per_page, n_kv_heads, head_dim)?.with_groups(self.n_groups())
    }

    /// The most pages one sequence holds (all groups together) at `n_tokens` positions,
    /// appending up to `step_tokens` at a time: every page of a full-attention group, and
    /// for a window group of window W the pages an append of S tokens at position a keeps,
    /// those meeting positions a − W + 1 ..= a + S − 1.
    pub fn pages_per_sequence(
        &self,
        kv_page_size: usize,
        n_tokens: usize,
        step_tokens: usize,
    ) -> usize {
        let page = kv_page_size.max(1);
        let all = n_tokens.div_ceil(page);
        self.windows
            .iter()
            .map(|w| match w {
                None => all,
                Some(w) => {
                    // An interval of L positions meets at most (L + P − 2) / P + 1 pages.
                    let span = w + step_tokens.max(1) - 1;
                    all.min((span + page - 2) / page + 1)
                }
            })
            .sum()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemma 3's pattern: every sixth layer global, the others a window of 512.
    fn gemma3(n_layers: usize) -> Vec<Option<usize>> {
        (0..n_layers).map(|l| (l % 6 != 5).then_some(512)).collect()
    }

    #[test]
    fn one_kind_of_layer_is_one_group_with_slot_equal_to_layer() {
        let g = KvGroups::uniform(30).unwrap();
        assert_eq!((g.layers_per_page(), g.n_groups()), (30, 1));
        assert!((0..30).all(|l| g.placement(l) == Some((0, l))));
        assert_eq!(g.placement(30), None);
        let all_window = KvGroups::new(&[Some(4096); 8]).unwrap();
        assert_eq!(all_window.windows(), [Some(4096)]);
    }

    #[test]
    fn gemma3_270m_has_a_global_group_and_five_window_groups_of_three_layers() {
        let g = KvGroups::new(&gemma3(18)).unwrap();
        assert_eq!(g.layers_per_page(), 3);
        assert_eq!(
            g.windows(),
            [None, Some(512), Some(512), Some(512), Some(512), Some(512)]
        );
        assert_eq!(g.placement(5), Some((0, 0)));
        assert_eq!(g.placement(11), Some((0, 1)));
        assert_eq!(g.placement(17), Some((0, 2)));
        assert_eq!(g.placement(0), Some((1, 0)));
        assert_eq!(g.placement(4), Some((2, 1)));
        assert_eq!(g.placement(16), Some((5, 2)));
        // Every (group, slot) holds exactly one layer.
        let mut seen = vec![false; g.n_groups() * g.layers_per_page()];
        for l in 0..18 {
            let (group, slot) = g.placement(l).unwrap();
            assert!(!std::mem::replace(
                &mut seen[group * g.layers_per_page() + slot],
                true
            ));
        }
        assert!(seen.iter().all(|&s| s));
        let layout = g.layout(1, 256).unwrap();
        assert_eq!((layout.n_layers(), layout.n_groups()), (3, 6));
    }

    #[test]
    fn counts_without_a_common_divisor_give_one_layer_pages() {
        // Gemma 3 1B: 26 layers, 4 global and 22 window: pages of 2 layers, 13 groups.
        let g = KvGroups::new(&gemma3(26)).unwrap();
        assert_eq!((g.layers_per_page(), g.n_groups()), (2, 13));
        let g = KvGroups::new(&[None, Some(8), Some(8), Some(4), Some(8)]).unwrap();
        assert_eq!(g.layers_per_page(), 1);
        assert_eq!(g.windows(), [None, Some(4), Some(8), Some(8), Some(8)]);
        assert_eq!(g.placement(3), Some((1, 0)));
    }

    #[test]
    fn bad_windows_are_errors() {
        assert!(KvGroups::new(&[]).is_err());
        assert!(KvGroups::new(&[None, Some(0)]).is_err());
    }

    #[test]
    fn window_groups_hold_a_window_of_pages_whatever_the_context() {
        let g = KvGroups::new(&gemma3(18)).unwrap();
        // Decode (steps of one token) at 8k positions: 512 global pages, and per window
        // group the 512 positions a − 511 ..= a, which meet at most 33 pages of 16.
        assert_eq!(g.pages_per_sequence(16, 8192, 1), 512 + 5 * 33);
        // Short sequences hold every page in every group.
        assert_eq!(g.pages_per_sequence(16, 100, 1), 6 * 7);
        // Steps of 512: 1023 positions meet at most 65 pages.
        assert_eq!(g.pages_per_sequence(16, 8192, 512), 512 + 5 * 65);
        // Brute force over every start of a small case: window 5, pages of 4, steps of 3.
        let small = KvGroups::new(&[Some(5)]).unwrap();
        let worst = (0..40usize)
            .map(|a| {
                let lo = (a + 1).saturating_sub(5);
                (a + 3 - 1) / 4 - lo / 4 + 1
            })
            .max()
            .unwrap();
        assert_eq!(small.pages_per_sequence(4, 1000, 3), worst);
    }
}

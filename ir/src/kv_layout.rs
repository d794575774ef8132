//! The geometry of one KV page: how many tokens it holds and where each of its bytes lives.
//!
//! A page holds `kv_page_size` consecutive positions of one sequence for `n_layers` layers:
//! every layer of the model when its layers all attend alike (one block table per sequence
//! serves the whole model), or the layers of one KV group when they do not (sliding-window
//! layers apart from global ones, see [`crate::kv_groups`]; a "layer" below is then a slot
//! of the group, and a sequence has one block table per group, `n_groups` of them). Pages
//! of every group have the same size and lie back to back in the backend's buffer:
//! page `p` starts at byte `p * page_bytes()`. Inside a page (`T` = `kv_page_size`,
//! `H` = `n_kv_heads`, `D` = `head_dim`, `E` = bytes per value: 1 for FP8 E4M3, 2 for F16):
//!
//! ```text
//! page                                         byte offset within the page
//! ├── layer 0                                  0
//! │   ├── K values  (T, H, D) × E              k_offset(0, t, h)       = (t·H + h)·D·E
//! │   ├── V values  (T, H, D) × E              v_offset(0, t, h)       = V + (t·H + h)·D·E
//! │   ├── K scales  (T, H) × f32   FP8 only    k_scale_offset(0, t, h) = 2V + (t·H + h)·4
//! │   └── V scales  (T, H) × f32   FP8 only    v_scale_offset(0, t, h) = 2V + S + (t·H + h)·4
//! ├── layer 1                                  layer_bytes()
//! └── …                                        l · layer_bytes()
//! ```
//!
//! where `V` and `S` are the sizes of a values region and of a scales region, each rounded up
//! to [`KV_REGION_ALIGN`] bytes (no padding at all for the usual shapes: `T·H·D` a multiple
//! of 16). Values are token-major ("NHD", as in flash-attn's and FlashInfer's paged caches):
//! writing one token's K for all heads is one contiguous store, and reading one head of a
//! page is `T` rows of `D` values at a stride of `H·D`. An FP8 value decodes as
//! `e4m3_to_f32(byte) × scale` with the scale of its (token, head).

use std::fmt;
use std::str::FromStr;

/// Page ids are 32-bit everywhere (block tables, kernels).
pub const MAX_KV_PAGES: usize = u32::MAX as usize;

/// A page geometry that cannot exist.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("bad KV layout: {0}")]
pub struct KvLayoutError(pub String);

/// Tokens per page unless configured otherwise.
pub const DEFAULT_KV_PAGE_SIZE: usize = 16;

/// Every region of a page starts on this boundary, so f32 scales are aligned and kernels can
/// use 16-byte vector loads whatever the head size.
pub const KV_REGION_ALIGN: usize = 16;

const SCALE_BYTES: usize = std::mem::size_of::<f32>();

/// How K and V values are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// One byte per value (E4M3, largest finite 448) plus one f32 scale per (token, KV head).
    #[default]
    F8E4M3,
    /// IEEE half precision, two bytes per value, no scales.
    F16,
}

impl KvDtype {
    pub fn value_bytes(self) -> usize {
        match self {
            KvDtype::F8E4M3 => 1,
            KvDtype::F16 => 2,
        }
    }

    pub fn has_scales(self) -> bool {
        matches!(self, KvDtype::F8E4M3)
    }

    /// The IR's name for the storage type of the values.
    pub fn storage_dtype(self) -> crate::DType {
        match self {
            KvDtype::F8E4M3 => crate::DType::F8E4M3,
            KvDtype::F16 => crate::DType::F16,
        }
    }

    /// The name the CLI uses (`--kv fp8|f16`).
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F8E4M3 => "fp8",
            KvDtype::F16 => "f16",
        }
    }
}

impl fmt::Display for KvDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvDtype {
    type Err = KvLayoutError;

    fn from_str(s: &str) -> Result<Self, KvLayoutError> {
        match s.to_ascii_lowercase().as_str() {
            "fp8" | "f8" | "f8e4m3" | "e4m3" => Ok(KvDtype::F8E4M3),
            "f16" | "fp16" => Ok(KvDtype::F16),
            _ => Err(KvLayoutError(format!(
                "unknown KV cache type {s:?} (expected fp8 or f16)"
            ))),
        }
    }
}

/// The geometry of one page. Built validated (no zero dimension, no overflow), so every
/// method below is infallible and `page_bytes()` is never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvLayout {
    kv_page_size: usize,
    n_layers: usize,
    n_kv_heads: usize,
    head_dim: usize,
    dtype: KvDtype,
    /// KV groups: block tables per sequence (1 unless layers attend differently).
    n_groups: usize,
    // Derived once; offsets below stay under `page_bytes`, which was computed with checks.
    /// Bytes of one K (or V) values region, padded to KV_REGION_ALIGN.
    values_region: usize,
    /// Bytes of one K (or V) scales region, padded; 0 for F16.
    scales_region: usize,
    layer_bytes: usize,
    page_bytes: usize,
}

impl KvLayout {
    /// A layout with the defaults: [`DEFAULT_KV_PAGE_SIZE`] tokens per page, FP8 E4M3.
    pub fn new(n_layers: usize, n_kv_heads: usize, head_dim: usize) -> Result<Self, KvLayoutError> {
        Self::build(
            DEFAULT_KV_PAGE_SIZE,
            n_layers,
            n_kv_heads,
            head_dim,
            KvDtype::default(),
        )
    }

    pub fn with_kv_page_size(self, kv_page_size: usize) -> Result<Self, KvLayoutError> {
        Self::build(
            kv_page_size,
            self.n_layers,
            self.n_kv_heads,
            self.head_dim,
            self.dtype,
        )
        .map(|l| KvLayout {
            n_groups: self.n_groups,
            ..l
        })
    }

    pub fn with_dtype(self, dtype: KvDtype) -> Result<Self, KvLayoutError> {
        Self::build(
            self.kv_page_size,
            self.n_layers,
            self.n_kv_heads,
            self.head_dim,
            dtype,
        )
        .map(|l| KvLayout {
            n_groups: self.n_groups,
            ..l
        })
    }

    /// The same pages shared by `n_groups` KV groups (each sequence has a block table per
    /// group).
    pub fn with_groups(self, n_groups: usize) -> Result<Self, KvLayoutError> {
        if n_groups == 0 {
            return Err(KvLayoutError("n_groups must be at least 1".into()));
        }
        Ok(KvLayout { n_groups, ..self })
    }

    fn build(
        kv_page_size: usize,
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: KvDtype,
    ) -> Result<Self, KvLayoutError> {
        let dims = [
            ("kv_page_size", kv_page_size),
            ("n_layers", n_layers),
            ("n_kv_heads", n_kv_heads),
            ("head_dim", head_dim),
        ];
        if let Some((name, _)) = dims.iter().find(|(_, v)| *v == 0) {
            return Err(KvLayoutError(format!("{name} must be at least 1")));
        }
        let too_big = || {
            KvLayoutError(format!(
                "a page of {kv_page_size} tokens × {n_layers} layers × {n_kv_heads} KV heads × \
                 {head_dim} ({dtype}) overflows the address space"
            ))
        };
        let slots = kv_page_size.checked_mul(n_kv_heads).ok_or_else(too_big)?; // (T, H)
        let values_region = slots
            .checked_mul(head_dim)
            .and_then(|n| n.checked_mul(dtype.value_bytes()))
            .and_then(|n| n.checked_next_multiple_of(KV_REGION_ALIGN))
            .ok_or_else(too_big)?;
        let scales_region = if dtype.has_scales() {
            slots
                .checked_mul(SCALE_BYTES)
                .and_then(|n| n.checked_next_multiple_of(KV_REGION_ALIGN))
                .ok_or_else(too_big)?
        } else {
            0
        };
        let layer_bytes = values_region
            .checked_add(scales_region)
            .and_then(|n| n.checked_mul(2))
            .ok_or_else(too_big)?;
        let page_bytes = layer_bytes.checked_mul(n_layers).ok_or_else(too_big)?;
        Ok(KvLayout {
            kv_page_size,
            n_layers,
            n_kv_heads,
            head_dim,
            dtype,
            n_groups: 1,
            values_region,
            scales_region,
            layer_bytes,
            page_bytes,
        })
    }

    pub fn kv_page_size(&self) -> usize {
        self.kv_page_size
    }

    /// Layers (slots) a page holds.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// KV groups: block tables per sequence.
    pub fn n_groups(&self) -> usize {
        self.n_groups
    }

    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Why attention `a` cannot read this layout's pages (its slot, group, KV heads or
    /// head size are not the layout's), or None when it can: what every kernel set's
    /// lowering checks before it addresses a page.
    pub fn mismatch(&self, a: &crate::AttentionParams) -> Option<String> {
        let fits = a.kv_slot < self.n_layers()
            && a.kv_group < self.n_groups().max(1)
            && a.n_kv_heads == self.n_kv_heads()
            && a.head_dim == self.head_dim();
        (!fits).then(|| {
            format!(
                "KV slot {} attends over {} KV heads of {}, the KV layout holds {} slots of {} heads of {}",
                a.kv_slot,
                a.n_kv_heads,
                a.head_dim,
                self.n_layers(),
                self.n_kv_heads(),
                self.head_dim()
            )
        })
    }

    /// Bytes of one page (all layers, K and V, scales included). A multiple of
    /// [`KV_REGION_ALIGN`].
    pub fn page_bytes(&self) -> usize {
        self.page_bytes
    }

    /// Bytes of one layer within a page: the distance between layer `l` and `l + 1`.
    pub fn layer_bytes(&self) -> usize {
        self.layer_bytes
    }

    /// Bytes the cache stores per token, all layers of a page, K and V, scales included, without the
    /// region padding (so `bytes_per_token() * kv_page_size() <= page_bytes()`, equal for the
    /// usual shapes).
    pub fn bytes_per_token(&self) -> usize {
        let per_head = self.head_dim * self.dtype.value_bytes()
            + if self.dtype.has_scales() {
                SCALE_BYTES
            } else {
                0
            };
        self.n_layers * 2 * self.n_kv_heads * per_head
    }

    /// How many pages fit in `budget_bytes` (at most [`MAX_KV_PAGES`]).
    pub fn pages_for_budget(&self, budget_bytes: usize) -> usize {
        (budget_bytes / self.page_bytes).min(MAX_KV_PAGES)
    }

    /// Byte offset within a page of the `head_dim` K values of (`layer`, `token`, `head`);
    /// `None` when an index is outside the page.
    pub fn k_offset(&self, layer: usize, token: usize, head: usize) -> Option<usize> {
        self.value_offset(0, layer, token, head)
    }

    /// Byte offset within a page of the `head_dim` V values of (`layer`, `token`, `head`).
    pub fn v_offset(&self, layer: usize, token: usize, head: usize) -> Option<usize> {
        self.value_offset(1, layer, token, head)
    }

    /// Byte offset within a page of the f32 K scale of (`layer`, `token`, `head`); `None` for
    /// F16 pages, which have no scales, or when an index is outside the page.
    pub fn k_scale_offset(&self, layer: usize, token: usize, head: usize) -> Option<usize> {
        self.scale_offset(0, layer, token, head)
    }

    /// Byte offset within a page of the f32 V scale of (`layer`, `token`, `head`).
    pub fn v_scale_offset(&self, layer: usize, token: usize, head: usize) -> Option<usize> {
        self.scale_offset(1, layer, token, head)
    }

    /// Index of (token, head) within a region, or `None` if outside the page.
    fn slot(&self, layer: usize, token: usize, head: usize) -> Option<usize> {
        let inside = layer < self.n_layers && token < self.kv_page_size && head < self.n_kv_heads;
        inside.then_some(token * self.n_kv_heads + head)
    }

    /// `region` 0 is K, 1 is V.
    fn value_offset(
        &self,
        region: usize,
        layer: usize,
        token: usize,
        head: usize,
    ) -> Option<usize> {
        let slot = self.slot(layer, token, head)?;
        Some(
            layer * self.layer_bytes
                + region * self.values_region
                + slot * self.head_dim * self.dtype.value_bytes(),
        )
    }

    fn scale_offset(
        &self,
        region: usize,
        layer: usize,
        token: usize,
        head: usize,
    ) -> Option<usize> {
        if !self.dtype.has_scales() {
            return None;
        }
        let slot = self.slot(layer, token, head)?;
        Some(
            layer * self.layer_bytes
                + 2 * self.values_region
                + region * self.scales_region
                + slot * SCALE_BYTES,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M: 30 layers, 3 KV heads of 64.
    fn smollm2() -> KvLayout {
        KvLayout::new(30, 3, 64).unwrap()
    }

    #[test]
    fn defaults_are_16_token_fp8_pages() {
        let l = smollm2();
        assert_eq!(l.kv_page_size(), 16);
        assert_eq!(l.dtype(), KvDtype::F8E4M3);
    }

    #[test]
    fn fp8_page_bytes_count_values_and_scales() {
        let l = smollm2();
        // Per layer: K and V values 16·3·64 bytes each, K and V scales 16·3 f32 each.
        let per_layer = 2 * 16 * 3 * 64 + 2 * 16 * 3 * 4;
        assert_eq!(per_layer, 6528);
        assert_eq!(l.layer_bytes(), per_layer);
        assert_eq!(l.page_bytes(), 30 * per_layer);
        assert_eq!(l.bytes_per_token(), 30 * 2 * 3 * (64 + 4));
        assert_eq!(l.bytes_per_token() * 16, l.page_bytes());
    }

    #[test]
    fn f16_page_bytes_have_no_scales() {
        let l = smollm2().with_dtype(KvDtype::F16).unwrap();
        assert_eq!(l.page_bytes(), 30 * 2 * 16 * 3 * 64 * 2);
        assert_eq!(l.bytes_per_token(), 30 * 2 * 3 * 64 * 2);
        assert_eq!(l.k_scale_offset(0, 0, 0), None);
        assert_eq!(l.v_scale_offset(29, 15, 2), None);
    }

    #[test]
    fn offsets_follow_the_documented_layout() {
        let l = smollm2();
        let (v, s) = (16 * 3 * 64, 16 * 3 * 4);
        assert_eq!(l.k_offset(0, 0, 0), Some(0));
        assert_eq!(l.k_offset(0, 0, 1), Some(64));
        assert_eq!(l.k_offset(0, 1, 0), Some(3 * 64));
        assert_eq!(l.v_offset(0, 0, 0), Some(v));
        assert_eq!(l.k_scale_offset(0, 0, 0), Some(2 * v));
        assert_eq!(l.k_scale_offset(0, 1, 2), Some(2 * v + 5 * 4));
        assert_eq!(l.v_scale_offset(0, 0, 0), Some(2 * v + s));
        assert_eq!(l.k_offset(2, 0, 0), Some(2 * l.layer_bytes()));
        assert_eq!(l.v_scale_offset(29, 15, 2), Some(l.page_bytes() - 4));
    }

    #[test]
    fn offsets_outside_the_page_are_none() {
        let l = smollm2();
        assert_eq!(l.k_offset(30, 0, 0), None);
        assert_eq!(l.v_offset(0, 16, 0), None);
        assert_eq!(l.k_scale_offset(0, 0, 3), None);
    }

    /// Every byte of the page belongs to at most one (region, layer, token, head) and every
    /// f32 scale is 4-byte aligned, also for odd shapes that need padding.
    #[test]
    fn regions_tile_the_page_without_overlap() {
        for dtype in [KvDtype::F8E4M3, KvDtype::F16] {
            for (t, layers, h, d) in [(16, 2, 3, 64), (3, 2, 5, 7), (1, 1, 1, 1), (5, 3, 2, 9)] {
                let l = KvLayout::new(layers, h, d)
                    .and_then(|l| l.with_kv_page_size(t))
                    .and_then(|l| l.with_dtype(dtype))
                    .unwrap();
                assert_eq!(l.page_bytes() % KV_REGION_ALIGN, 0);
                assert!(l.bytes_per_token() * t <= l.page_bytes());
                let mut owner = vec![false; l.page_bytes()];
                let mut claim = |start: usize, len: usize| {
                    for b in &mut owner[start..start + len] {
                        assert!(!*b, "byte claimed twice in {l:?}");
                        *b = true;
                    }
                };
                let vb = d * dtype.value_bytes();
                for layer in 0..layers {
                    for tok in 0..t {
                        for head in 0..h {
                            claim(l.k_offset(layer, tok, head).unwrap(), vb);
                            claim(l.v_offset(layer, tok, head).unwrap(), vb);
                            for s in [
                                l.k_scale_offset(layer, tok, head),
                                l.v_scale_offset(layer, tok, head),
                            ]
                            .into_iter()
                            .flatten()
                            {
                                assert_eq!(s % 4, 0);
                                claim(s, 4);
                            }
                        }
                    }
                }
                let used = owner.iter().filter(|b| **b).count();
                assert_eq!(used, l.bytes_per_token() * t);
            }
        }
    }

    #[test]
    fn budget_sizing_rounds_down_to_whole_pages() {
        let l = smollm2();
        let page = l.page_bytes();
        assert_eq!(l.pages_for_budget(0), 0);
        assert_eq!(l.pages_for_budget(page - 1), 0);
        assert_eq!(l.pages_for_budget(page), 1);
        assert_eq!(l.pages_for_budget(10 * page + page / 2), 10);
        // 1 GiB of FP8 cache for SmolLM2 holds 5482 pages (87,712 tokens).
        assert_eq!(l.pages_for_budget(1 << 30), (1 << 30) / 195_840);
        assert_eq!(
            l.pages_for_budget(usize::MAX),
            MAX_KV_PAGES.min(usize::MAX / page)
        );
    }

    #[test]
    fn bad_layouts_are_errors() {
        assert!(matches!(KvLayout::new(0, 3, 64), Err(KvLayoutError(_))));
        assert!(matches!(KvLayout::new(30, 0, 64), Err(KvLayoutError(_))));
        assert!(matches!(KvLayout::new(30, 3, 0), Err(KvLayoutError(_))));
        assert!(matches!(
            smollm2().with_kv_page_size(0),
            Err(KvLayoutError(_))
        ));
        assert!(matches!(
            KvLayout::new(usize::MAX / 2, 3, 64),
            Err(KvLayoutError(_))
        ));
        assert!(matches!(
            KvLayout::new(1, 1 << 40, 1 << 40),
            Err(KvLayoutError(_))
        ));
    }

    #[test]
    fn dtype_names_round_trip() {
        for d in [KvDtype::F8E4M3, KvDtype::F16] {
            assert_eq!(d.name().parse::<KvDtype>(), Ok(d));
        }
        assert_eq!("FP16".parse::<KvDtype>(), Ok(KvDtype::F16));
        assert!("q8_0".parse::<KvDtype>().is_err());
        assert_eq!(KvDtype::F8E4M3.storage_dtype(), crate::DType::F8E4M3);
    }
}

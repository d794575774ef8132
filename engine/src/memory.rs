//! What a compiled model costs in memory, worked out before anything large is allocated,
//! and `--mem-budget`: the arena and the KV page pool are sized to fit a byte budget, or
//! the model is refused with the figures that did not fit.
//!
//! Counted against the budget: the backend's activation arena, its KV pages, what its
//! `load_plan` allocates besides (decoded vectors, repacked weights), and the host-side
//! logits rows and sampler working set. Weights are not: they stay in the model file's
//! memory map (file-backed pages the OS can drop and read again) and are reported apart.

use kiln_ir::Plan;
use kiln_ir::kv_layout::KvLayout;

/// Bytes of bookkeeping per KV page on the host (page state, free list, prefix index).
pub const KV_PAGE_META_BYTES: usize = 64;

/// The memory a compiled model takes, by purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Weight bytes read in place from the model file's map (not counted in the budget).
    pub weights_mapped_bytes: usize,
    /// The activation arena of the plan (`plan.arena_bytes`).
    pub arena_bytes: usize,
    /// What the backend allocates at load besides the arena and the KV pages.
    pub backend_bytes: usize,
    /// Logits rows copied out each step and the sampler's working set.
    pub host_bytes: usize,
    /// Bytes of one KV page (all layers, K and V, scales), plus its host bookkeeping.
    pub kv_page_bytes: usize,
    pub kv_pages: usize,
    /// Tokens a step of the plan holds (a tight budget shrinks it: a smaller arena).
    pub max_step_tokens: usize,
    /// The budget this was sized for, if any.
    pub budget_bytes: Option<usize>,
}

impl MemoryPlan {
    /// Everything but the KV pages.
    pub fn fixed_bytes(&self) -> usize {
        self.arena_bytes
            .saturating_add(self.backend_bytes)
            .saturating_add(self.host_bytes)
    }

    pub fn kv_bytes(&self) -> usize {
        self.kv_pages.saturating_mul(self.kv_page_bytes)
    }

    /// What the engine allocates: fixed bytes and KV pages (weights excluded).
    pub fn total_bytes(&self) -> usize {
        self.fixed_bytes().saturating_add(self.kv_bytes())
    }
}

/// A budget that cannot hold the model's minimum.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a memory budget of {budget} bytes cannot hold this model: it needs at least {needed} bytes \
     (arena {arena} at {step_tokens} token(s) a step, backend {backend}, logits and sampler {host}, \
     {min_pages} KV page(s) of {page}); the {weights} bytes of weights are mapped from the file and not counted"
)]
pub struct BudgetError {
    pub budget: usize,
    pub needed: usize,
    pub arena: usize,
    pub backend: usize,
    pub host: usize,
    pub page: usize,
    pub min_pages: usize,
    pub step_tokens: usize,
    pub weights: usize,
}

/// Host bytes outside the backend: the logits rows a step copies out, and the sampler's
/// (id, logit) candidates and probabilities over the vocabulary.
pub fn host_bytes(max_outputs: usize, vocab: usize) -> usize {
    let logits = max_outputs.saturating_mul(vocab).saturating_mul(4);
    let sampler = vocab.saturating_mul(8 + 4);
    logits.saturating_add(sampler)
}

/// Bytes of one KV page as the budget counts it: the backend's page and its host
/// bookkeeping.
pub fn kv_page_cost(layout: &KvLayout) -> usize {
    layout.page_bytes() + KV_PAGE_META_BYTES
}

/// Bytes of all weights the plan reads (what stays in the file map), each tensor once
/// (a tied embedding is both the input table and the output head).
pub fn weight_bytes(plan: &Plan) -> usize {
    let mut seen = std::collections::HashSet::new();
    plan.graph
        .weights
        .iter()
        .filter(|w| seen.insert(w.name.as_str()))
        .filter_map(|w| w.dtype.bytes_for((w.rows * w.cols) as u64))
        .map(|b| b as usize)
        .sum()
}

/// What sizing asks for, besides the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvRequest {
    /// Pages wanted without a budget (room for the whole context of every sequence, or
    /// what `--kv-budget` allows).
    pub wanted_pages: usize,
    /// Pages without which nothing runs (one per sequence).
    pub min_pages: usize,
}

/// Size the KV pool of `fixed` (a [`MemoryPlan`] with `kv_pages` unset) within
/// `fixed.budget_bytes`: the wanted pages, or as many as the rest of the budget holds,
/// never fewer than the minimum.
pub fn fit(mut plan: MemoryPlan, kv: KvRequest) -> Result<MemoryPlan, BudgetError> {
    let Some(budget) = plan.budget_bytes else {
        plan.kv_pages = kv.wanted_pages;
        return Ok(plan);
    };
    let min_pages = kv.min_pages.max(1).min(kv.wanted_pages.max(1));
    let fixed = plan.fixed_bytes();
    let page = plan.kv_page_bytes.max(1);
    let room = budget.saturating_sub(fixed) / page;
    if room < min_pages {
        return Err(BudgetError {
            budget,
            needed: fixed.saturating_add(min_pages.saturating_mul(page)),
            arena: plan.arena_bytes,
            backend: plan.backend_bytes,
            host: plan.host_bytes,
            page,
            min_pages,
            step_tokens: plan.max_step_tokens,
            weights: plan.weights_mapped_bytes,
        });
    }
    plan.kv_pages = kv.wanted_pages.min(room);
    Ok(plan)
}

/// A sized plan that the device's memory cannot hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{device} has {device_bytes} bytes of memory; this model as sized needs {needed} there \
     (arena {arena}, backend {backend}, {kv_pages} KV page(s): {kv} bytes): give --mem-budget \
     below the device's memory, or fewer sequences (--max-seqs) or a shorter context (-c)"
)]
pub struct DeviceMemoryError {
    pub device: String,
    pub device_bytes: u64,
    pub needed: u64,
    pub arena: usize,
    pub backend: usize,
    pub kv_pages: usize,
    pub kv: u64,
}

/// Refuse a sized plan whose device part (arena, backend buffers, KV pages; host logits
/// and page bookkeeping apart) exceeds the device's memory, where the backend knows it:
/// before anything is allocated, with the figures, rather than an allocation failing
/// halfway through loading.
pub fn check_device(
    plan: &MemoryPlan,
    device: &str,
    device_bytes: Option<u64>,
) -> Result<(), DeviceMemoryError> {
    let Some(device_bytes) = device_bytes else {
        return Ok(());
    };
    let page = plan.kv_page_bytes.saturating_sub(KV_PAGE_META_BYTES) as u64;
    let kv = page.saturating_mul(plan.kv_pages as u64);
    let needed = (plan.arena_bytes as u64)
        .saturating_add(plan.backend_bytes as u64)
        .saturating_add(kv);
    if needed <= device_bytes {
        return Ok(());
    }
    Err(DeviceMemoryError {
        device: device.to_string(),
        device_bytes,
        needed,
        arena: plan.arena_bytes,
        backend: plan.backend_bytes,
        kv_pages: plan.kv_pages,
        kv,
    })
}

/// The next smaller step size to try when a budget does not fit: half, but never below
/// `floor` (the logits rows a step must hold). None when already at the floor.
pub fn smaller_step(step_tokens: usize, floor: usize) -> Option<usize> {
    let floor = floor.max(1);
    (step_tokens > floor).then(|| (step_tokens / 2).max(floor))
}

/// Resident memory of this process, from `/proc/self/status` (Linux; None elsewhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resident {
    /// Peak resident set (VmHWM).
    pub peak_bytes: u64,
    /// Resident now (VmRSS).
    pub current_bytes: u64,
    /// Anonymous memory resident now (RssAnon): heap and arenas, not the mapped weights.
    pub anon_bytes: u64,
    /// File-backed memory resident now (RssFile): mostly the mapped weights.
    pub file_bytes: u64,
}

/// This process's resident memory, or None where `/proc/self/status` is not there.
pub fn resident() -> Option<Resident> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(Resident {
        peak_bytes: field("VmHWM:")?,
        current_bytes: field("VmRSS:")?,
        anon_bytes: field("RssAnon:").unwrap_or(0),
        file_bytes: field("RssFile:").unwrap_or(0),
    })
}

/// Parse a byte count with an optional binary suffix: `1048576`, `512K`, `64M`, `1.5G`
/// (K, M, G, T are powers of 1024; a trailing `B` or `iB` is allowed).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let digits_end = upper
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(upper.len());
    let (number, suffix) = upper.split_at(digits_end);
    let bad = || format!("{t:?} is not a byte count (e.g. 268435456, 512M, 1.5G)");
    if number.is_empty() {
        return Err(bad());
    }
    let scale: u64 = match suffix.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            let suffix = &t[digits_end..];
            return Err(format!(
                "{t:?}: unknown size suffix {suffix:?} (use K, M, G or T)"
            ));
        }
    };
    let bytes = if number.contains('.') {
        let v: f64 = number.parse().map_err(|_| bad())?;
        let b = v * scale as f64;
        if !b.is_finite() || b < 0.0 || b > usize::MAX as f64 {
            return Err(bad());
        }
        b as usize
    } else {
        let v: u64 = number.parse().map_err(|_| bad())?;
        v.checked_mul(scale)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(bad)?
    };
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(budget: Option<usize>) -> MemoryPlan {
        MemoryPlan {
            weights_mapped_bytes: 100_000_000,
            arena_bytes: 1000,
            backend_bytes: 100,
            host_bytes: 900,
            kv_page_bytes: 500,
            kv_pages: 0,
            max_step_tokens: 16,
            budget_bytes: budget,
        }
    }

    #[test]
    fn without_a_budget_the_wanted_pages_are_taken() {
        let p = fit(
            plan(None),
            KvRequest {
                wanted_pages: 7,
                min_pages: 1,
            },
        )
        .unwrap();
        assert_eq!(p.kv_pages, 7);
        assert_eq!(p.kv_bytes(), 3500);
        assert_eq!(p.total_bytes(), 2000 + 3500);
    }

    #[test]
    fn a_budget_caps_the_pool_at_what_is_left() {
        // 2000 fixed; 2000 + 3 × 500 = 3500 ≤ 3700 < 4000.
        let p = fit(
            plan(Some(3700)),
            KvRequest {
                wanted_pages: 7,
                min_pages: 1,
            },
        )
        .unwrap();
        assert_eq!(p.kv_pages, 3);
        assert!(p.total_bytes() <= 3700);
        // A roomy budget takes no more than wanted.
        let p = fit(
            plan(Some(1 << 30)),
            KvRequest {
                wanted_pages: 7,
                min_pages: 1,
            },
        )
        .unwrap();
        assert_eq!(p.kv_pages, 7);
    }

    #[test]
    fn a_budget_below_the_minimum_is_an_error_with_the_figures() {
        let err = fit(
            plan(Some(2400)),
            KvRequest {
                wanted_pages: 7,
                min_pages: 1,
            },
        )
        .unwrap_err();
        assert_eq!(err.needed, 2500);
        assert_eq!(err.budget, 2400);
        let msg = err.to_string();
        assert!(msg.contains("2400 bytes"), "{msg}");
        assert!(msg.contains("at least 2500 bytes"), "{msg}");
        assert!(msg.contains("mapped from the file"), "{msg}");
        // Exactly the minimum fits.
        let p = fit(
            plan(Some(2500)),
            KvRequest {
                wanted_pages: 7,
                min_pages: 1,
            },
        )
        .unwrap();
        assert_eq!(p.kv_pages, 1);
        // Two sequences need two pages.
        let err = fit(
            plan(Some(2900)),
            KvRequest {
                wanted_pages: 7,
                min_pages: 2,
            },
        )
        .unwrap_err();
        assert_eq!(err.needed, 3000);
    }

    #[test]
    fn the_fixed_part_alone_can_exceed_the_budget() {
        let err = fit(
            plan(Some(10)),
            KvRequest {
                wanted_pages: 1,
                min_pages: 1,
            },
        )
        .unwrap_err();
        assert_eq!(err.needed, 2500);
    }

    /// Llama 3 8B's KV cache in FP8: 32 layers × 8 KV heads × 128 dims, K and V, and an
    /// f32 scale per (token, head) of each: 67,584 bytes a token, 1,081,344 a page of 16.
    fn llama3_8b_kv() -> (kiln_ir::kv_groups::KvGroups, KvLayout) {
        let groups = kiln_ir::kv_groups::KvGroups::uniform(32).unwrap();
        let layout = groups
            .layout(8, 128)
            .unwrap()
            .with_dtype(kiln_ir::kv_layout::KvDtype::F8E4M3)
            .unwrap();
        (groups, layout)
    }

    /// The 8B shape on a big device: arena of 512-token steps, weights uploaded (Q4_0),
    /// logits of 32 rows over Llama 3's vocabulary.
    fn llama3_8b_plan(layout: &KvLayout, budget: Option<usize>) -> MemoryPlan {
        MemoryPlan {
            weights_mapped_bytes: 4_660_000_000,
            arena_bytes: 600_000_000,
            backend_bytes: 4_700_000_000,
            host_bytes: host_bytes(32, 128_256),
            kv_page_bytes: kv_page_cost(layout),
            kv_pages: 0,
            max_step_tokens: 512,
            budget_bytes: budget,
        }
    }

    #[test]
    fn thirty_two_sequences_of_8k_tokens_fit_a_40_gb_budget() {
        let (groups, layout) = llama3_8b_kv();
        assert_eq!(layout.bytes_per_token(), 32 * (8 * 128 * 2 + 8 * 4 * 2));
        assert_eq!(layout.page_bytes(), 16 * 67_584);
        let options = crate::compiled::CompileOptions {
            max_seqs: 32,
            mem_budget_bytes: Some(40_000_000_000),
            ..crate::compiled::CompileOptions::new(8192)
        };
        let request = crate::compiled::kv_request(&groups, &layout, &options).unwrap();
        assert_eq!(request.wanted_pages, 32 * 8192 / 16);
        assert_eq!(request.min_pages, 32);
        let p = fit(llama3_8b_plan(&layout, options.mem_budget_bytes), request).unwrap();
        assert_eq!(p.kv_pages, 16_384, "every sequence's whole context");
        // ≈ 17.7 GB of KV (16,384 pages of 1,081,344 bytes, plus their bookkeeping).
        assert_eq!(p.kv_bytes(), 16_384 * (1_081_344 + KV_PAGE_META_BYTES));
        assert!(p.total_bytes() <= 40_000_000_000);
        // An H100's 80 GB holds it; a 20 GB card does not (23 GB needed), and says so before allocating.
        check_device(&p, "H100", Some(80 << 30)).unwrap();
        let err = check_device(&p, "a 20 GB card", Some(20_000_000_000)).unwrap_err();
        assert_eq!(err.needed, 5_300_000_000 + 16_384 * 1_081_344);
        let msg = err.to_string();
        assert!(msg.contains("a 20 GB card has 20000000000 bytes"), "{msg}");
        assert!(msg.contains("--mem-budget"), "{msg}");
        // A backend that does not know its memory (the CPU's) is not checked.
        check_device(&p, "CPU", None).unwrap();
    }

    #[test]
    fn a_budget_short_of_32_by_8k_takes_fewer_pages_and_one_too_small_is_refused() {
        let (groups, layout) = llama3_8b_kv();
        let options = crate::compiled::CompileOptions {
            max_seqs: 32,
            ..crate::compiled::CompileOptions::new(8192)
        };
        let request = crate::compiled::kv_request(&groups, &layout, &options).unwrap();
        // 16 GB: 10.7 GB left for pages, about 19 sequences of 8k at once (admission
        // counts pages, so the others wait).
        let p = fit(llama3_8b_plan(&layout, Some(16_000_000_000)), request).unwrap();
        assert_eq!(
            p.kv_pages,
            (16_000_000_000 - p.fixed_bytes()) / p.kv_page_bytes
        );
        assert_eq!(p.kv_pages * 16 / 8192, 19);
        // Below the weights, arena and one page per sequence: refused with the figures.
        let err = fit(llama3_8b_plan(&layout, Some(5_000_000_000)), request).unwrap_err();
        assert_eq!(err.min_pages, 32);
        assert!(err.to_string().contains("32 KV page(s)"), "{err}");
        // Without a budget the request is the whole context of every sequence.
        let p = fit(llama3_8b_plan(&layout, None), request).unwrap();
        assert_eq!(p.kv_pages, 16_384);
    }

    #[test]
    fn step_sizes_halve_down_to_the_floor() {
        let mut steps = vec![512];
        while let Some(s) = smaller_step(*steps.last().unwrap(), 1) {
            steps.push(s);
        }
        assert_eq!(steps, [512, 256, 128, 64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(smaller_step(10, 4), Some(5));
        assert_eq!(smaller_step(5, 4), Some(4));
        assert_eq!(smaller_step(4, 4), None);
    }

    #[test]
    fn host_bytes_cover_logits_and_sampler() {
        assert_eq!(host_bytes(1, 1000), 4000 + 12_000);
        assert_eq!(host_bytes(usize::MAX, usize::MAX), usize::MAX);
    }

    #[test]
    fn byte_counts_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert!(parse_bytes("").is_err());
        assert!(
            parse_bytes("lots")
                .unwrap_err()
                .contains("not a byte count")
        );
        assert!(parse_bytes("12X").unwrap_err().contains("\"X\""));
        assert!(parse_bytes("12X").is_err());
        assert!(parse_bytes("-5").is_err());
        assert!(parse_bytes("99999999999999999999T").is_err());
    }

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let r = resident().expect("/proc/self/status");
            assert!(r.peak_bytes >= r.current_bytes);
            assert!(r.current_bytes > 0);
        }
    }
}

//! The decode attention geometry (launch.rs, mirrored by attention_decode.cu and
//! attention_combine.cu): the split choice, and that the blocks cover every query head
//! and every position exactly once, inside the partial buffer, at odd lengths, partial
//! last pages, GQA ratios 1/3/4/8/16 and head sizes 64/128/256; the prefill kernel's
//! choice and tiles.

use crate::launch::{
    AD_MAX_GROUP, AD_TILE, AttentionShape, DECODE_MAX_TOKENS, DEFAULT_MAX_SHARED, FP_ROWS,
    MAX_SPLITS, SPLIT_MIN_POSITIONS, attention_combine_launch, attention_decode_launch,
    attention_prefill_launch, attention_splits, decode_shared_bytes, decode_total_shared,
    length_class, partial_bytes_max, partial_floats, prefill_heads, prefill_keys,
    prefill_shared_bytes, prefill_wgmma_shared_bytes, split_range,
};
use crate::variant::Entry;

fn shape(n_heads: u32, n_kv_heads: u32, head_dim: u32, value_bytes: u32) -> AttentionShape {
    AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
        value_bytes,
    }
}

const H100_SMS: u32 = 132;

#[test]
fn splits_fill_the_sms_only_for_long_contexts() {
    let s = shape(32, 8, 128, 1);
    // Batch 1 at 8192: 8 blocks would leave 124 SMs idle; 16 splits of 512.
    assert_eq!(attention_splits(&s, 1, length_class(8192), H100_SMS), 16);
    // Short contexts stay whole: a split of fewer than 512 positions is not worth it.
    assert_eq!(attention_splits(&s, 1, length_class(100), H100_SMS), 1);
    assert_eq!(attention_splits(&s, 1, length_class(1023), H100_SMS), 1);
    assert_eq!(attention_splits(&s, 1, length_class(1024), H100_SMS), 2);
    // Batch 32 × 8 KV heads = 256 blocks, just under two per SM: two splits.
    assert_eq!(attention_splits(&s, 32, length_class(8192), H100_SMS), 2);
    // Batch 64: 512 blocks fill the SMs.
    assert_eq!(attention_splits(&s, 64, length_class(8192), H100_SMS), 1);
    // Longer steps are prefill: never split.
    assert_eq!(attention_splits(&s, DECODE_MAX_TOKENS + 1, 16, H100_SMS), 1);
    // Always a power of two within 1..=MAX_SPLITS.
    for n_tokens in 1..=DECODE_MAX_TOKENS {
        for class in 1..=MAX_SPLITS {
            for sms in [1, 46, 108, 132, 170] {
                let k = attention_splits(&s, n_tokens, class, sms);
                assert!(k.is_power_of_two() && k <= class.max(1) && k <= MAX_SPLITS);
            }
        }
    }
    assert_eq!(length_class(0), 1);
    assert_eq!(length_class(SPLIT_MIN_POSITIONS * 100), MAX_SPLITS);
}

#[test]
fn splits_cover_every_position_once_in_whole_tiles() {
    for n in [1, 2, 31, 32, 33, 63, 100, 511, 513, 1000, 4097, 8191, 8192] {
        for splits in [1, 2, 4, 8, 16] {
            let mut next = 0;
            for split in 0..splits {
                let (begin, end) = split_range(n, splits, split);
                assert!(begin <= end && end <= n, "n {n} split {split}/{splits}");
                if begin < end {
                    assert_eq!(begin, next, "n {n} split {split}/{splits}: a gap");
                    assert_eq!(begin % AD_TILE, 0, "splits start on a tile");
                    next = end;
                }
            }
            assert_eq!(next, n, "n {n} splits {splits}: positions left over");
        }
    }
}

#[test]
fn decode_blocks_cover_every_query_head_once() {
    for (n_heads, n_kv_heads) in [(8, 8), (12, 4), (32, 8), (64, 8), (28, 4), (32, 2), (6, 2)] {
        for head_dim in [64, 128, 256] {
            let s = shape(n_heads, n_kv_heads, head_dim, 1);
            let l = attention_decode_launch(&s, 3, 4).expect("a launch");
            let group = n_heads / n_kv_heads;
            let mut seen = vec![0u32; n_heads as usize];
            // attention_decode.cu's head mapping, block by block.
            for bx in 0..l.grid[0] {
                let hb = s.head_blocks();
                let kvh = bx / hb;
                let g0 = (bx % hb) * AD_MAX_GROUP;
                let gn = AD_MAX_GROUP.min(group - g0);
                assert!(gn > 0 && kvh < n_kv_heads);
                for g in 0..gn {
                    let h = kvh * group + g0 + g;
                    // attention.cu's GQA mapping: query head h reads KV head h / group.
                    assert_eq!(h / group, kvh);
                    seen[h as usize] += 1;
                }
            }
            assert!(
                seen.iter().all(|&c| c == 1),
                "{n_heads}/{n_kv_heads}: {seen:?}"
            );
            assert_eq!(l.grid[1..], [3, 4]);
        }
    }
}

#[test]
fn partial_writes_stay_inside_the_buffer() {
    for (n_heads, n_kv_heads) in [(8, 8), (12, 4), (32, 8), (64, 8)] {
        for head_dim in [64, 128, 256] {
            let s = shape(n_heads, n_kv_heads, head_dim, 1);
            let max = partial_bytes_max(&s) / 4;
            for n_tokens in [1, 7, 32, DECODE_MAX_TOKENS] {
                for class in [1, 3, 16] {
                    let splits = attention_splits(&s, n_tokens, class, H100_SMS);
                    let used = partial_floats(&s, n_tokens, splits);
                    assert!(used <= max);
                    // The last (m, l) word the decode kernel writes.
                    let last_idx = u64::from((n_tokens * n_heads - 1) * splits + splits - 1);
                    let ml = u64::from(n_tokens * n_heads * splits * head_dim);
                    assert_eq!(ml + 2 * last_idx + 2, used);
                    let c = attention_combine_launch(&s, n_tokens, splits);
                    assert_eq!(c.is_some(), splits > 1);
                }
            }
        }
    }
}

#[test]
fn decode_shared_memory_fits_the_devices() {
    // FP8 rows of 64 and 128 need no opt-in; F16 rows of 256 take 76 KiB (the backend
    // raises the function's limit at load; every sm_80+ device allows 163 KiB).
    assert!(decode_total_shared(&shape(32, 8, 128, 1)) <= DEFAULT_MAX_SHARED);
    assert!(decode_total_shared(&shape(32, 8, 64, 2)) <= DEFAULT_MAX_SHARED);
    for head_dim in (4..=256).step_by(4) {
        for value_bytes in [1, 2] {
            let s = shape(8, 8, head_dim, value_bytes);
            assert!(decode_total_shared(&s) <= 163 * 1024);
            // Rows start on 16 bytes, so cp.async of 16 lands aligned.
            assert_eq!(decode_shared_bytes(&s) % (4 * AD_TILE * 16), 0);
        }
    }
}

#[test]
fn decode_launch_refuses_what_the_kernel_cannot_take() {
    let s = shape(32, 8, 128, 1);
    assert!(attention_decode_launch(&s, 0, 1).is_none());
    assert!(attention_decode_launch(&s, DECODE_MAX_TOKENS + 1, 1).is_none());
    assert!(attention_decode_launch(&s, 1, 0).is_none());
    assert!(attention_decode_launch(&s, 1, MAX_SPLITS + 1).is_none());
    let args = |n_heads, n_kv_heads, head_dim| crate::args::KvArgs {
        n_heads,
        n_kv_heads,
        head_dim,
        ..Default::default()
    };
    assert!(AttentionShape::of(&args(32, 0, 128), 1).is_none());
    assert!(AttentionShape::of(&args(32, 8, 130), 1).is_none());
    assert_eq!(AttentionShape::of(&args(32, 8, 128), 1), Some(s));
}

#[test]
fn prefill_takes_long_fp8_steps_on_tensor_cores() {
    // 32 heads over 8 KV heads: blocks of the 4 heads of a KV head × 16 tokens.
    let fp8 = shape(32, 8, 128, 1);
    let l = attention_prefill_launch(&fp8, 8192, true, false).expect("a launch");
    assert_eq!((l.entry, l.grid), (Entry::Prefill(1), [8, 512, 1]));
    assert_eq!(prefill_heads(&fp8), 4);
    // Odd lengths and groups: the last tile is partial, every (token, head) row covered.
    for (n_heads, n_kv_heads) in [(32, 8), (9, 3), (8, 8), (16, 1), (100, 1), (130, 1)] {
        let s = shape(n_heads, n_kv_heads, 64, 1);
        let heads = prefill_heads(&s);
        let group = n_heads / n_kv_heads;
        let tokens = FP_ROWS / heads;
        assert!(heads <= FP_ROWS && tokens * heads <= FP_ROWS && tokens >= 1);
        for n in [65, 100, 127, 129, 4097] {
            let l = attention_prefill_launch(&s, n, true, false).unwrap();
            assert!(l.grid[1] * tokens >= n && (l.grid[1] - 1) * tokens < n);
            // Head blocks × heads a block cover the group, the last one maybe partly.
            let head_blocks = l.grid[0] / n_kv_heads;
            assert_eq!(l.grid[0], n_kv_heads * head_blocks);
            assert!(head_blocks * heads >= group && (head_blocks - 1) * heads < group);
        }
    }
    assert!(attention_prefill_launch(&fp8, DECODE_MAX_TOKENS, true, false).is_none());
    assert!(attention_prefill_launch(&fp8, 8192, false, false).is_none());
    assert!(attention_prefill_launch(&shape(32, 8, 128, 2), 8192, true, true).is_none());
    // Head sizes pad to 64, 128 or 256, each its entry.
    for (hd, entry) in [(4, 0), (64, 0), (68, 1), (128, 1), (132, 2), (256, 2)] {
        let l = attention_prefill_launch(&shape(8, 8, hd, 1), 100, true, false).unwrap();
        assert_eq!(l.entry, Entry::Prefill(entry), "head size {hd}");
        let w = attention_prefill_launch(&shape(8, 8, hd, 1), 100, true, true).unwrap();
        assert_eq!(
            (w.entry, w.grid, w.block),
            (Entry::PrefillWgmma(entry), l.grid, l.block),
            "head size {hd}"
        );
    }
    // The warpgroup-MMA kernel (sm_90a: up to 227 KiB a block): f16 tiles of 64 keys in
    // core matrices 144 bytes apart, two buffers of them up to 128 dims (62.6 KiB at 64,
    // 123.9 KiB at 128), one at 256 (173.75 KiB).
    let wg = |hd| prefill_wgmma_shared_bytes(&shape(8, 8, hd, 1));
    assert_eq!((wg(64), wg(128), wg(256)), (64128, 126848, 177920));
    assert!(
        wg(256) + 2048 <= 227 * 1024,
        "with its 2 KiB of static shared memory"
    );
    // 44 KiB at 64 dims (no opt-in), 84 KiB at 128, 98.5 KiB at 256: within what sm_86
    // and sm_89 let a block opt in to (99 KiB), two blocks an SM on sm_80 and sm_90.
    assert_eq!(prefill_shared_bytes(&shape(8, 8, 64, 1)), 45056);
    assert!(prefill_shared_bytes(&shape(8, 8, 64, 1)) <= DEFAULT_MAX_SHARED);
    assert_eq!(prefill_shared_bytes(&fp8), 86016);
    assert_eq!(prefill_shared_bytes(&shape(8, 8, 256, 1)), 100864);
    assert!(prefill_shared_bytes(&shape(8, 8, 256, 1)) <= 99 * 1024);
    assert_eq!(
        prefill_shared_bytes(&shape(8, 8, 68, 1)),
        prefill_shared_bytes(&shape(8, 8, 128, 1))
    );
    assert_eq!(prefill_keys(256), 32);
    assert_eq!(prefill_keys(128), 64);
}

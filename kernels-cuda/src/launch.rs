//! The launch geometry of the kernels: block sizes, tiles, the attention paths' grids,
//! splits and shared memory ([`crate::lower::geometry`] puts them together per call).

use crate::args::KvArgs;
use crate::variant::{Entry, PREFILL_HEAD_DIMS};

/// Threads of a block that mirrors a WGSL workgroup (prelude.cuh: WG).
pub const WG: u32 = 64;
/// Tokens of a matrix-vector tile (prelude.cuh: TILE_T).
pub const TILE_T: u32 = 8;
/// Output rows of a matrix-vector block: one per warp (matmul_core.cuh: MV_WARPS).
pub const MV_ROWS: u32 = 4;
/// Warp width of every NVIDIA GPU (the backend refuses a device that says otherwise).
pub const WARP: u32 = 32;
/// Threads of an argmax block (one block per logits row).
pub const ARGMAX_THREADS: u32 = 256;
/// Threads of a top-k block (one block per logits row): one per candidate it sorts.
pub const TOP_K_THREADS: u32 = 1024;
/// The largest k top_k.cu chooses (its TOP_K_MAX): its candidates, 8 bytes each, are
/// sorted in shared memory by one block, one per thread. Samplers ask for tens (40 is
/// llama.cpp's default); a larger k is chosen on the host (`kiln_ir::backend::host_top_k`).
pub const TOP_K_MAX: usize = 1024;
/// The largest grid y and z (CUDA's limit; x goes to 2^31 - 1).
pub const MAX_GRID_YZ: u32 = 65535;

/// One kernel launch: which entry of the variant, how many blocks of how many threads,
/// how much dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub entry: Entry,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// The launch of the argmax kernel over `rows` logits rows.
pub fn argmax_launch(rows: u32) -> Option<Launch> {
    (rows > 0).then_some(Launch {
        entry: Entry::Main,
        grid: [rows, 1, 1],
        block: [ARGMAX_THREADS, 1, 1],
        shared_bytes: 0,
    })
}

/// The launch of the top-k kernel over `rows` logits rows.
pub fn top_k_launch(rows: u32) -> Option<Launch> {
    (rows > 0).then_some(Launch {
        entry: Entry::Main,
        grid: [rows, 1, 1],
        block: [TOP_K_THREADS, 1, 1],
        shared_bytes: 0,
    })
}

/// Blocks in x then y for `n` blocks (y past CUDA's 65535 limit of y; x goes to 2^31 - 1
/// but the kernels count x then y like the WGSL workgroups they mirror).
pub fn split(n: u32) -> [u32; 2] {
    if n <= MAX_GRID_YZ {
        [n, 1]
    } else {
        [MAX_GRID_YZ, n.div_ceil(MAX_GRID_YZ)]
    }
}

/// Positions of a decode attention tile (attention_decode.cu: AD_TILE).
pub const AD_TILE: u32 = 32;
/// Threads of a decode attention block (attention_decode.cu: AD_WARPS warps).
pub const AD_THREADS: u32 = 4 * WARP;
/// Query heads one decode block serves (attention_decode.cu: AD_MAX_GROUP): a KV head
/// with a larger group gets several blocks.
pub const AD_MAX_GROUP: u32 = 8;
/// Most splits of one (token, KV head): the partial buffer holds this many.
pub const MAX_SPLITS: u32 = 16;
/// Fewest positions worth a split of their own: shorter ones cost more in the combine
/// and the extra (m, l, acc) traffic than their parallelism gains (to tune on a GPU).
pub const SPLIT_MIN_POSITIONS: u32 = 512;
/// Steps of at most this many tokens take the decode kernel (batched decode, short
/// chunks); longer ones the one-block-per-(head, token) kernel until prefill has its own.
pub const DECODE_MAX_TOKENS: u32 = 64;
/// Static shared memory of the decode kernel: q of AD_MAX_GROUP heads of up to 256 dims,
/// and the FP8 scales (attention_decode.cu: q_sh, scales).
const AD_STATIC_SHARED: u32 = AD_MAX_GROUP * 256 * 4 + 2 * 2 * AD_TILE * 4;
/// Dynamic shared memory a kernel gets without opting in (cuFuncSetAttribute above it).
pub const DEFAULT_MAX_SHARED: u32 = 48 * 1024;

/// The shape of an attention call (its KvArgs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Bytes of one KV value: 1 for FP8 E4M3, 2 for F16.
    pub value_bytes: u32,
}

impl AttentionShape {
    /// From an attention's arguments; None when they cannot be an attention's (the
    /// lowering checked them: this only keeps the host from dividing by zero).
    pub fn of(a: &KvArgs, value_bytes: u32) -> Option<AttentionShape> {
        let (n_heads, n_kv_heads, head_dim) = (a.n_heads, a.n_kv_heads, a.head_dim);
        let ok = n_kv_heads > 0
            && n_heads.is_multiple_of(n_kv_heads)
            && head_dim > 0
            && head_dim.is_multiple_of(4)
            && head_dim <= 256;
        ok.then_some(AttentionShape {
            n_heads,
            n_kv_heads,
            head_dim,
            value_bytes,
        })
    }

    /// Blocks per KV head: one per AD_MAX_GROUP query heads of its group.
    pub fn head_blocks(&self) -> u32 {
        (self.n_heads / self.n_kv_heads).div_ceil(AD_MAX_GROUP)
    }
}

/// Bytes between two rows of a shared tile (attention_decode.cu: ad_row_stride).
pub fn decode_row_stride(shape: &AttentionShape) -> u32 {
    (shape.head_dim * shape.value_bytes).div_ceil(16) * 16 + 16
}

/// Dynamic shared memory of the decode kernel: 2 stages × (K, V) × AD_TILE rows.
pub fn decode_shared_bytes(shape: &AttentionShape) -> u32 {
    2 * 2 * AD_TILE * decode_row_stride(shape)
}

/// Static plus dynamic shared memory of a decode block (what the device must allow).
pub fn decode_total_shared(shape: &AttentionShape) -> u32 {
    decode_shared_bytes(shape) + AD_STATIC_SHARED
}

/// The length class of a step: how many splits its longest context could use. Splits
/// depend on nothing else of the positions, so a captured graph is keyed by this.
pub fn length_class(max_context: u32) -> u32 {
    (max_context / SPLIT_MIN_POSITIONS).clamp(1, MAX_SPLITS)
}

/// Splits of each (token, KV head) for a step of `n_tokens` tokens of length class
/// `class` ([`length_class`]) on `sm_count` SMs: enough blocks for two per SM, each
/// split at least [`SPLIT_MIN_POSITIONS`] long, a power of two (fewer graph shapes).
/// One split when the step does not take the decode kernel.
pub fn attention_splits(shape: &AttentionShape, n_tokens: u32, class: u32, sm_count: u32) -> u32 {
    if n_tokens == 0 || n_tokens > DECODE_MAX_TOKENS {
        return 1;
    }
    let blocks = n_tokens * shape.n_kv_heads * shape.head_blocks();
    let want = (2 * sm_count.max(1)).div_ceil(blocks);
    let s = want.min(class).clamp(1, MAX_SPLITS);
    // The largest power of two not above s.
    1 << (31 - s.leading_zeros())
}

/// The decode kernel's launch: grid (KV heads × head blocks, tokens, splits).
pub fn attention_decode_launch(
    shape: &AttentionShape,
    n_tokens: u32,
    splits: u32,
) -> Option<Launch> {
    let l = Launch {
        entry: Entry::Decode,
        grid: [shape.n_kv_heads * shape.head_blocks(), n_tokens, splits],
        block: [AD_THREADS, 1, 1],
        shared_bytes: decode_shared_bytes(shape),
    };
    (n_tokens > 0 && n_tokens <= DECODE_MAX_TOKENS && (1..=MAX_SPLITS).contains(&splits))
        .then_some(l)
}

/// The combine launch after a decode launch of `splits` > 1: grid (heads, tokens).
pub fn attention_combine_launch(
    shape: &AttentionShape,
    n_tokens: u32,
    splits: u32,
) -> Option<Launch> {
    (splits > 1 && n_tokens > 0).then_some(Launch {
        entry: Entry::Combine,
        grid: [shape.n_heads, n_tokens, 1],
        block: [WG, 1, 1],
        shared_bytes: 0,
    })
}

/// f32 values of the partial buffer for a step: acc (tokens, heads, splits, head_dim)
/// then (m, l) (tokens, heads, splits, 2) (attention_decode.cu: partial).
pub fn partial_floats(shape: &AttentionShape, n_tokens: u32, splits: u32) -> u64 {
    u64::from(n_tokens)
        * u64::from(shape.n_heads)
        * u64::from(splits)
        * (u64::from(shape.head_dim) + 2)
}

/// Bytes of the partial buffer that covers every step of a plan with this shape.
pub fn partial_bytes_max(shape: &AttentionShape) -> u64 {
    4 * partial_floats(shape, DECODE_MAX_TOKENS, MAX_SPLITS)
}

/// The positions `[begin, end)` split `split` of `splits` covers of a context of `n`
/// positions: chunks of whole tiles, the last split the rest, empty ones at the end
/// (attention_decode.cu computes the same).
pub fn split_range(n: u32, splits: u32, split: u32) -> (u32, u32) {
    let chunk = n.div_ceil(splits).div_ceil(AD_TILE) * AD_TILE;
    let begin = n.min(split * chunk);
    (begin, n.min(begin + chunk))
}

/// Query rows of a prefill attention block, (token, query head) pairs (attention_prefill.cu:
/// FP_ROWS).
pub const FP_ROWS: u32 = 64;
/// Threads of a prefill attention block (attention_prefill.cu: FP_THREADS): 4 warps.
pub const FP_THREADS: u32 = 4 * WARP;

/// The first of [`PREFILL_HEAD_DIMS`] a shape's head size fits (None past 256).
fn prefill_class(shape: &AttentionShape) -> Option<usize> {
    PREFILL_HEAD_DIMS.iter().position(|&d| shape.head_dim <= d)
}

/// The entry of the prefill attention for a shape (its head size class).
pub fn prefill_entry(shape: &AttentionShape) -> Option<Entry> {
    prefill_class(shape).map(|i| Entry::Prefill(i as u8))
}

/// The head size the prefill kernel computes with (attention_prefill.cu: HD).
fn prefill_head_dim(shape: &AttentionShape) -> u32 {
    prefill_class(shape).map_or(0, |i| PREFILL_HEAD_DIMS[i])
}

/// KV positions of a prefill attention tile for a head size (attention_prefill.cu:
/// FP_KEYS): 32 at 256, whose output takes 128 registers a thread, else 64.
pub fn prefill_keys(hd: u32) -> u32 {
    if hd > 128 { 32 } else { 64 }
}

/// Query heads of a prefill block (attention_prefill.cu: fp_heads): the KV head's whole
/// group, up to [`FP_ROWS`]; the block takes FP_ROWS / that many tokens.
pub fn prefill_heads(shape: &AttentionShape) -> u32 {
    (shape.n_heads / shape.n_kv_heads).min(FP_ROWS)
}

/// Dynamic shared memory of the prefill kernel (attention_prefill.cu: fp_attention), with
/// HD the padded head size and BK [`prefill_keys`]: two stages of raw K and V (BK, HD)
/// E4M3 and of their scales (BK) f32, then f16 K and V (BK, HD + 8) and q (FP_ROWS, HD + 8).
pub fn prefill_shared_bytes(shape: &AttentionShape) -> u32 {
    let hd = prefill_head_dim(shape);
    let bk = prefill_keys(hd);
    4 * bk * hd + 4 * 4 * bk + 2 * (2 * bk + FP_ROWS) * (hd + 8)
}

/// The entry of the warpgroup-MMA prefill attention for a shape (its head size class).
pub fn prefill_wgmma_entry(shape: &AttentionShape) -> Option<Entry> {
    prefill_class(shape).map(|i| Entry::PrefillWgmma(i as u8))
}

/// KV positions of a tile of the warpgroup-MMA prefill (attention_prefill_wgmma.cu:
/// FW_KEYS): the N of its S = q K^T wgmma, every head size.
pub const PREFILL_WGMMA_KEYS: u32 = 64;

/// f16 K/V^T buffers of the warpgroup-MMA prefill (attention_prefill_wgmma.cu: FW_BUFS):
/// two, so a tile's P·V runs while the next is converted, but one at 256 dims (two would
/// pass the 227 KiB a block may have).
pub fn prefill_wgmma_buffers(hd: u32) -> u32 {
    if hd > 128 { 1 } else { 2 }
}

/// Bytes of a `rows` × `kdim` f16 operand of the warpgroup-MMA prefill
/// (attention_prefill_wgmma.cu: fw_tile): 8×8 core matrices 144 bytes apart in K and
/// (kdim / 8) · 144 + 16 apart in rows.
fn wgmma_tile_bytes(rows: u32, kdim: u32) -> u32 {
    rows / 8 * (kdim / 8 * 144 + 16)
}

/// Dynamic shared memory of the warpgroup-MMA prefill (attention_prefill_wgmma.cu:
/// fw_attention), HD the padded head size, BK [`PREFILL_WGMMA_KEYS`]: two stages of raw K
/// and V (BK, HD) E4M3 and of their scales (BK) f32, then [`prefill_wgmma_buffers`] of f16
/// K (BK, HD) and V^T (HD, BK), and q (FP_ROWS, HD), in wgmma's core-matrix layout.
pub fn prefill_wgmma_shared_bytes(shape: &AttentionShape) -> u32 {
    let hd = prefill_head_dim(shape);
    let bk = PREFILL_WGMMA_KEYS;
    let kv = wgmma_tile_bytes(bk, hd) + wgmma_tile_bytes(hd, bk);
    4 * bk * hd + 4 * 4 * bk + prefill_wgmma_buffers(hd) * kv + wgmma_tile_bytes(FP_ROWS, hd)
}

/// The tensor-core prefill attention's launch (FP8 caches, steps of more than
/// [`DECODE_MAX_TOKENS`] tokens, devices with mma.sync; with `wgmma`, compute capability
/// 9.0 with the sm_90a module, the warpgroup-MMA kernel): grid (KV heads × head blocks,
/// token tiles of FP_ROWS / [`prefill_heads`] tokens), either kernel.
pub fn attention_prefill_launch(
    shape: &AttentionShape,
    n_tokens: u32,
    tensor_cores: bool,
    wgmma: bool,
) -> Option<Launch> {
    let (entry, shared_bytes) = if wgmma {
        (
            prefill_wgmma_entry(shape)?,
            prefill_wgmma_shared_bytes(shape),
        )
    } else {
        (prefill_entry(shape)?, prefill_shared_bytes(shape))
    };
    let heads = prefill_heads(shape);
    let head_blocks = (shape.n_heads / shape.n_kv_heads).div_ceil(heads);
    (tensor_cores && shape.value_bytes == 1 && n_tokens > DECODE_MAX_TOKENS).then_some(Launch {
        entry,
        grid: [
            shape.n_kv_heads * head_blocks,
            n_tokens.div_ceil(FP_ROWS / heads),
            1,
        ],
        block: [FP_THREADS, 1, 1],
        shared_bytes,
    })
}

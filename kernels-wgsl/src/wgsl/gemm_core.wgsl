// gemm_core.wgsl: the tiled matrix-matrix core shared by the seven gemm files, what
// steps of many tokens (prefill) run instead of matmul_core's matrix-vector tiles. A
// workgroup of GEMM_THREADS computes GEMM_BT (64) tokens × GEMM_BS (64) weight rows
// ("slots"): per K-step of GEMM_KU units (32 columns), each thread dequantizes one weight
// unit (w_unit) into workgroup memory and loads the 8 input values that meet it, then
// accumulates a 4 tokens × 4 slots tile in registers over the step's columns. Every
// weight is read and dequantized once per 64 tokens (the matrix-vector tiles: once per
// TILE_T = 8), every input once per 64 slots (there: once per weight row).
//
// Inputs are read in the weight format's unit order (unit_cols), so a K-step needs no
// contiguous columns (the K-quants interleave theirs) and every format's w_unit serves.
// Edges: tokens past the step, slots past the weight's rows and units past k load zeros
// and store nothing.
//
// The tiles' type is the variant's: gemm_tiles_f32.wgsl (16 KiB of workgroup memory:
// WebGPU's minimum limit) or, on devices with shader-f16, gemm_tiles_f16.wgsl (f16 tiles
// and products, f32 sums; 11.25 KiB), or on devices with cooperative matrices
// gemm_tiles_coop.wgsl (f16 tiles, the products summed by the matrix units). Each defines
// the entry point's builtins (GemmIds), the tiles (xs, ws), the accumulators (GemmAcc),
// gemm_reduce4, gemm_token_scale, gemm_store, gemm_step and gemm_unscale, and GEMM_F16.
//
// The op file sets GEMM_NORM (the RMSNorm prologue: each tile computes 1/rms of its
// tokens and scales the inputs as it loads them, the normed input is never stored) and
// GEMM_GATED (gate and up interleaved in the slots: slot 4g + j holds gate row 2g + j
// for j < 2, up row 2g + j - 2 otherwise, so a thread's tile is 2 output columns of
// both and a workgroup covers 32 output columns), and writes the outputs.

const GEMM_THREADS: u32 = 256u;
const GEMM_BT: u32 = 64u; // tokens of a tile
const GEMM_BS: u32 = 64u; // slots (weight rows) of a tile
const GEMM_KU: u32 = 4u;  // units of 8 columns per K-step
const GEMM_KC: u32 = 32u; // columns per K-step

// Four input values of token `tok` (of the step) from column c.
fn gemm_x4(tok: u32, c: u32) -> vec4<f32> {
    let i = p.x + tok * p.k + c;
    return vec4<f32>(arena[i], arena[i + 1u], arena[i + 2u], arena[i + 3u]);
}

fn gemm_norm4(c: u32) -> vec4<f32> {
    return vec4<f32>(vector_at(p.norm + c), vector_at(p.norm + c + 1u), vector_at(p.norm + c + 2u), vector_at(p.norm + c + 3u));
}

// Output columns a workgroup covers.
fn gemm_cols() -> u32 {
    return select(GEMM_BS, GEMM_BS / 2u, GEMM_GATED);
}

// Slot s of the tile whose first output column is col0: the byte offset of its weight
// row, and whether that row exists.
struct Slot {
    at: u32,
    live: bool,
}

fn gemm_slot(col0: u32, s: u32) -> Slot {
    var col = col0 + s;
    var w = p.w;
    if (GEMM_GATED) {
        col = col0 + 2u * (s / 4u) + s % 2u;
        w = select(p.w, p.w2, s % 4u >= 2u);
    }
    return Slot(w + col * p.row_bytes, col < p.n);
}

// A thread's share of the tile: tokens t0 + 4·ty + i (acc[i]) by slots 4·tx + j
// (component j), and where the tile starts.
struct Gemm {
    t0: u32,
    col0: u32,
    rows: u32,
    tx: u32,
    ty: u32,
    acc: array<vec4<f32>, 4>,
}

// Over token `tok`'s row, from the 4 threads lid & ~3 .. +3 that load it: Σx² (the
// RMSNorm's) and the largest |x·norm| (norm: the RMSNorm's weight, or 1), what f16 tiles
// scale the token by.
fn gemm_row_stats(tok: u32, live: bool, lid: u32) -> vec2<f32> {
    var s = vec2<f32>(0.0);
    if (live) {
        for (var c = 4u * (lid % 4u); c < p.k; c += 16u) {
            let v = gemm_x4(tok, c);
            if (GEMM_NORM) {
                s.x += dot(v, v);
            }
            if (GEMM_F16) {
                var a = abs(v);
                if (GEMM_NORM) {
                    a *= abs(gemm_norm4(c));
                }
                s.y = max(s.y, max(max(a.x, a.y), max(a.z, a.w)));
            }
        }
    }
    return gemm_reduce4(s, lid);
}

fn gemm_tile(ids: GemmIds) -> Gemm {
    let wg = ids.wg;
    let n_wg = ids.n_wg;
    let lid = ids.lid;
    var g: Gemm;
    g.t0 = wg.z * GEMM_BT;
    g.col0 = (wg.y * n_wg.x + wg.x) * gemm_cols();
    g.rows = step[p.rows_sel];
    g.tx = lid % 16u;
    g.ty = lid / 16u;
    // What this thread loads: token (and slot) lid / 4, unit lid % 4 of each K-step.
    let lt = lid / 4u;
    let lu = lid % 4u;
    let tok = g.t0 + lt;
    let tok_live = tok < g.rows;
    let slot = gemm_slot(g.col0, lt);
    // What the token's inputs are multiplied by as they are loaded: 1/rms for the
    // RMSNorm, and the f16 tiles' power of two.
    var scale = 1.0;
    if (GEMM_NORM || GEMM_F16) {
        let stats = gemm_row_stats(tok, tok_live, lid);
        if (GEMM_NORM) {
            scale = 1.0 / sqrt(stats.x / f32(p.k) + p.eps);
        }
        scale *= gemm_token_scale(lt, lu, stats.y * scale, slot);
    }
    // Whether this thread's 4 × 4 has anything to compute (a partial tile skips the rest).
    let busy = g.t0 + 4u * g.ty < g.rows && gemm_slot(g.col0, 4u * g.tx).live;
    let units = p.k / 8u;
    var acc = GemmAcc();
    for (var u0 = 0u; u0 < units; u0 += GEMM_KU) {
        let u = u0 + lu;
        var wu = W8(vec4<f32>(0.0), vec4<f32>(0.0));
        var xlo = vec4<f32>(0.0);
        var xhi = vec4<f32>(0.0);
        if (u < units) {
            let c = unit_cols(u);
            if (slot.live) {
                wu = w_unit(slot.at, u);
            }
            if (tok_live) {
                xlo = gemm_x4(tok, c.x) * scale;
                xhi = gemm_x4(tok, c.y) * scale;
                if (GEMM_NORM) {
                    xlo *= gemm_norm4(c.x);
                    xhi *= gemm_norm4(c.y);
                }
            }
        }
        gemm_store(lt, lu, wu, xlo, xhi);
        workgroupBarrier();
        gemm_step(ids, g, busy, &acc);
        workgroupBarrier();
    }
    g.acc = gemm_unscale(ids, g, acc);
    return g;
}

// The power of two s (and 1/s) that puts `largest` (≥ 0) in [16, 32) (the f16 tiles'
// scales): from its biased exponent e, s = 2^(131 − e). e is clamped to [5, 254], so that
// both are normal f32s: below 2^-122 everything lands below 16; an infinity or a NaN
// stays what it is.
fn gemm_pow2(largest: f32) -> vec2<f32> {
    let e = clamp((bitcast<u32>(largest) >> 23u) & 0xffu, 5u, 254u);
    return vec2<f32>(bitcast<f32>((258u - e) << 23u), bitcast<f32>((e - 4u) << 23u));
}

// Where the thread writes token i of its tile, output column j of its own (0..3, or
// 0..1 when gated): the arena index, and whether both exist.
struct GemmOut {
    at: u32,
    live: bool,
}

fn gemm_out(g: Gemm, i: u32, j: u32) -> GemmOut {
    let tok = g.t0 + 4u * g.ty + i;
    var col = g.col0 + 4u * g.tx + j;
    if (GEMM_GATED) {
        col = g.col0 + 2u * g.tx + j;
    }
    return GemmOut(p.out + tok * p.out_stride + col, tok < g.rows && col < p.n);
}

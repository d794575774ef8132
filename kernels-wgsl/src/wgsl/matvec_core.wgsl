// matvec_core.wgsl: the int8 decode matvec shared by the matvec_q8 files: weights with
// 16-byte aligned rows (packed at load, repack.rs, or Q4_K's; read 16 bytes at a time)
// against activations its launch quantized once (quantize_core.wgsl), with packed
// 4×8-bit integer dot products. A workgroup computes MV_ROWS weight rows for every token
// of the step (at most MATVEC_MAX_ROWS = 32, the host's gate): each row group (a
// subgroup, or 16 threads without subgroups; mv_reduce_*.wgsl) takes its rows in turn,
// its lanes striding over the row's blocks; each block of weights is read once for a
// tile of TILE_T tokens, tile after tile (so from DRAM once per step), and the row
// group sums its lanes.
//
// The weights file (weights_q8/<dtype>) defines w_block(row, b): 32-value block b of the
// row at vec4 index `row`, as 8 words of 4 signed bytes in column order and the weight's
// part of block_dot's sum: d·Σ q_w·q_x per half + c·Σ q_x (c: Q4_0's −8·d, Q5_0's −16·d,
// Q4_1's and Q5_1's m, Q4_K's and Q5_K's −dmin·m, Q8_0's and Q6_K's 0).

struct Params {
    rows_sel: u32,   // STEP_N_TOKENS or STEP_N_OUTPUTS: what the rows count
    k: u32,          // input columns (a multiple of 32)
    n: u32,          // output columns (weight rows) of this dispatch
    row_bytes: u32,  // bytes of one packed weight row (a multiple of 16)
    q: u32,          // arena word of the activation quants (rows, k / 4)
    ds: u32,         // arena word of their (d, Σq) pairs (rows, k / 32, 2)
    out: u32,        // arena index of the output (rows, out_stride) at this dispatch's first column
    w: u32,          // byte offset of the weight (gate) in `wv` (a multiple of 16)
    w2: u32,         // byte offset of the second weight (up)
    res: u32,        // arena index of the residual (rows, out_stride), like `out`
    out_stride: u32, // columns of an output row
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<u32>;
@group(0) @binding(2) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

const MV_ROWS: u32 = 8u;

// A block of weights: 32 signed bytes (columns 0-15 in lo, 16-31 in hi), the scales of
// the two halves (d.x of lo, d.y of hi: Q6_K's 16-value sub-blocks) and c.
struct WBlock {
    lo: vec4<u32>,
    hi: vec4<u32>,
    d: vec2<f32>,
    c: f32,
}

// The fifth bits of Q5_0/Q5_1's 16 values h holds (bits 0-15, column order) as bit 4
// of each byte: word i takes bits 4i .. 4i+3 (the multiply puts bit k at bit 8k + k,
// masked to bit 8k; the summands' bits never overlap).
fn fifth_bits(h: u32) -> vec4<u32> {
    let x = (vec4<u32>(h) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u);
    return ((x * 0x00204081u) & vec4<u32>(0x01010101u)) << vec4<u32>(4u);
}

// Q4_K and Q5_K: sub-block j's 6-bit (scale, minimum) from the 12 bytes in s (ggml's
// get_scale_min_k4; weights/common.wgsl's k_scale_min, from words).
fn k_scale_min_q8(s: vec3<u32>, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_of(s.x, j) & 63u), f32(byte_of(s.y, j) & 63u));
    }
    let i = j - 4u;
    let b = byte_of(s.z, i);
    let sc = (b & 15u) | ((byte_of(s.x, i) >> 6u) << 4u);
    let m = (b >> 4u) | ((byte_of(s.y, i) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

fn idot4(a: u32, b: u32) -> i32 {
    return dot4I8Packed(a, b);
}

// Block b of token t's quantized activations dotted with a block of weights.
fn block_dot(wb: WBlock, t: u32, b: u32, blocks: u32) -> f32 {
    let at = p.q + 8u * (t * blocks + b);
    let s_lo = idot4(wb.lo.x, arena[at]) + idot4(wb.lo.y, arena[at + 1u]) + idot4(wb.lo.z, arena[at + 2u]) + idot4(wb.lo.w, arena[at + 3u]);
    let s_hi = idot4(wb.hi.x, arena[at + 4u]) + idot4(wb.hi.y, arena[at + 5u]) + idot4(wb.hi.z, arena[at + 6u]) + idot4(wb.hi.w, arena[at + 7u]);
    let ds = p.ds + 2u * (t * blocks + b);
    let d = bitcast<f32>(arena[ds]);
    let sum = f32(bitcast<i32>(arena[ds + 1u]));
    return d * (dot(wb.d, vec2<f32>(f32(s_lo), f32(s_hi))) + wb.c * sum);
}

// Row r of the weight at byte offset w against tokens t0 .. t0 + TILE_T (those below
// nt); every lane of the row group gets the sums. `live`: r is a row of this dispatch
// (the sums are taken either way: the reduction wants the whole group).
fn row_sums(w: u32, r: u32, t0: u32, nt: u32, live: bool, g: Group) -> array<f32, 8> {
    var acc: array<f32, 8>;
    if (live) {
        let row = (w + r * p.row_bytes) >> 4u;
        let blocks = p.k / 32u;
        for (var b = g.lane; b < blocks; b += g.size) {
            let wb = w_block(row, b);
            for (var t = 0u; t < TILE_T; t++) {
                if (t0 + t < nt) {
                    acc[t] += block_dot(wb, t0 + t, b, blocks);
                }
            }
        }
    }
    return group_sum8(acc, g);
}

// Arena index of token t's output column r.
fn out_at(t: u32, r: u32) -> u32 {
    return p.out + t * p.out_stride + r;
}

// The workgroup's rows, each row group's in turn: a uniform loop (the workgroup
// reduction's barriers), rows past MV_ROWS or the dispatch's n not live.
struct Rows {
    r0: u32,
    per_group: u32,
    nt: u32,
}

fn rows_of(wg: vec3<u32>, n_wg: vec3<u32>, g: Group) -> Rows {
    return Rows((wg.y * n_wg.x + wg.x) * MV_ROWS, (MV_ROWS + g.count - 1u) / g.count, step[p.rows_sel]);
}

// The kernel: every row of the workgroup for every tile of the step's tokens. The op
// file defines MV_PAIR (a second weight, w2: gate and up) and mv_out(at, y, u), the
// value written at arena index `at` from the row's sums y (and u).
fn matvec(wg: vec3<u32>, n_wg: vec3<u32>, g: Group) {
    let rs = rows_of(wg, n_wg, g);
    for (var i = 0u; i < rs.per_group; i++) {
        let slot = i * g.count + g.id;
        let r = rs.r0 + slot;
        let live = slot < MV_ROWS && r < p.n;
        for (var t0 = 0u; t0 < rs.nt; t0 += TILE_T) {
            let y = row_sums(p.w, r, t0, rs.nt, live, g);
            var u: array<f32, 8>;
            if (MV_PAIR) {
                u = row_sums(p.w2, r, t0, rs.nt, live, g);
            }
            for (var t = g.lane; t < TILE_T; t += g.size) {
                if (live && t0 + t < rs.nt) {
                    let at = out_at(t0 + t, r);
                    arena[at] = bitcast<u32>(mv_out(at, y[t], u[t]));
                }
            }
        }
    }
}

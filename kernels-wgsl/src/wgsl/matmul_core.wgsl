// matmul_core.wgsl: the matrix-vector core shared by the five matmul files. A workgroup
// computes one output row (weight row) for a tile of up to TILE_T tokens: each thread
// takes units of 8 columns, dequantizes the weight there once and accumulates it against
// every token of the tile; then the workgroup sums the TILE_T partial sums (subgroup or
// workgroup reduction). Decode (1-8 tokens) is one tile; prefill runs
// ceil(tokens / TILE_T) tiles (grid z). (Four rows a workgroup, sharing the input loads,
// measured 10× slower to build and no faster on lavapipe; to revisit on GPUs.)
//
// The op file defines `x4(t, c)`: four input values of the tile's token t from column c.
// Loops over tokens run to the constant TILE_T (so that the accumulators stay registers,
// not memory indexed at run time) and skip the tokens past the tile's end.

// (TILE_T) 1/rms of each token of the tile, for the RMSNorm variants.
var<private> inv_rms: array<f32, 8>;
// The tile's first token.
var<private> tile_t0: u32;

fn x_raw4(t: u32, c: u32) -> vec4<f32> {
    let i = p.x + (tile_t0 + t) * p.k + c;
    return vec4<f32>(arena[i], arena[i + 1u], arena[i + 2u], arena[i + 3u]);
}

// x · inv_rms · norm, the RMSNorm folded into the input read.
fn x_normed4(t: u32, c: u32) -> vec4<f32> {
    let g = vec4<f32>(vector_at(p.norm + c), vector_at(p.norm + c + 1u), vector_at(p.norm + c + 2u), vector_at(p.norm + c + 3u));
    return x_raw4(t, c) * inv_rms[t] * g;
}

// The workgroup's share: output row r for tokens t0 .. t0 + nt.
struct Tile {
    r: u32,
    t0: u32,
    nt: u32,
    live: bool,
}

fn tile(wg: vec3<u32>, n_wg: vec3<u32>) -> Tile {
    let r = wg.y * n_wg.x + wg.x;
    let t0 = wg.z * TILE_T;
    tile_t0 = t0;
    let rows = step[p.rows_sel];
    return Tile(r, t0, min(TILE_T, rows - min(t0, rows)), r < p.n);
}

// inv_rms of the tile's tokens: 1 / sqrt(mean(x²) + eps).
fn rms_tile(tl: Tile, ln: Lanes) {
    var acc: array<f32, 8>;
    for (var c = ln.lid * 4u; c < p.k; c += WG * 4u) {
        for (var t = 0u; t < TILE_T; t++) {
            if (t < tl.nt) {
                let v = x_raw4(t, c);
                acc[t] += dot(v, v);
            }
        }
    }
    let sums = wg_sum8(acc, ln);
    for (var t = 0u; t < TILE_T; t++) {
        inv_rms[t] = 1.0 / sqrt(sums[t] / f32(p.k) + p.eps);
    }
}

// Row r of the weight at byte offset w against the tile's tokens; every thread gets the
// TILE_T sums.
fn row_dots(w: u32, tl: Tile, ln: Lanes) -> array<f32, 8> {
    var acc: array<f32, 8>;
    if (tl.live) {
        let row = w + tl.r * p.row_bytes;
        for (var u = ln.lid; u < p.k / 8u; u += WG) {
            let wu = w_unit(row, u);
            let c = unit_cols(u);
            for (var t = 0u; t < TILE_T; t++) {
                if (t < tl.nt) {
                    acc[t] += dot(wu.lo, x4(t, c.x)) + dot(wu.hi, x4(t, c.y));
                }
            }
        }
    }
    return wg_sum8(acc, ln);
}

// Thread lid writes token lid of the tile: the arena index, and whether it is inside.
struct Out {
    at: u32,
    live: bool,
}

fn out_of(tl: Tile, lid: u32) -> Out {
    return Out(p.out + (tl.t0 + lid) * p.out_stride + tl.r, tl.live && lid < tl.nt);
}

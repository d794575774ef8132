// gemm_tiles_coop.wgsl: gemm_core's tiles for devices with cooperative matrices
// (VK_KHR_cooperative_matrix's 16 × 16 × 16, f16 A and B, f32 C, subgroup scope): f16
// tiles as gemm_tiles_f16.wgsl stores them, the products summed in f32 by the matrix
// units. The matrix operations are the four functions and three types of
// gemm_coop_native.wgsl (WGSL's coop_mat16x16, coopLoad, coopMultiplyAdd, coopStore),
// or of its twin gemm_coop_twin.wgsl, the same in plain WGSL (what the conformance suite
// runs on lavapipe, which has no cooperative matrices).
//
// The workgroup's 64 tokens × 64 slots are 4 × 4 blocks of 16 × 16; subgroup i of n
// accumulates blocks i, i + n, i + 2n, i + 3n (of those below 16) in its four C
// matrices, two matrix multiply-adds (16 columns each) per K-step: a device must run
// at least 4 subgroups of a workgroup (subgroups of at most 64). Blocks past the step's
// tokens or the weight's rows are skipped. At the end the C matrices are stored to
// workgroup memory (cs), from which each thread reads gemm_core's 4 × 4 of its own.
//
// Range, as gemm_tiles_f16.wgsl's: a token's inputs are scaled by the power of two that
// puts the largest |value| of its row in [16, 32), and a slot's weights likewise, by one
// power of two for its whole row (the matrix units sum across units, so the f16 tiles'
// per-unit scales cannot be undone between them): a pass before the K loop dequantizes
// each slot's row once for its largest. Both scales are undone on the f32 sums. Every f16
// is below 32, every product below 1024; the sums are the matrix units' f32.

const GEMM_F16: bool = true;

// Halves per row of xs and ws: a K-step's 32 columns and 8 of padding (rows 80 bytes
// apart, not 64, spread a column's loads over the memory banks).
const GEMM_XS: u32 = 40u;
// Floats per row of cs (a row of 64 slots).
const GEMM_CS: u32 = 64u;

// xs[t·GEMM_XS + c]: token t's (scaled) input at column c of the step: A, row-major.
var<workgroup> xs: array<f16, 2560>;
// ws[s·GEMM_XS + c]: slot s's (scaled) weight at column c of the step: B (columns × slots),
// column-major.
var<workgroup> ws: array<f16, 2560>;
// cs[t·GEMM_CS + s]: the sums of token t by slot s at the end (scratch for gemm_reduce4
// before the K loop).
var<workgroup> cs: array<f32, 4096>;
// What each token's inputs and each slot's weights were scaled by, inverted.
var<workgroup> xinv: array<f32, 64>;
var<workgroup> winv: array<f32, 64>;
// The factor this loader's slot's weights are stored with.
var<private> gemm_wscale: f32;

// A subgroup's four 16 × 16 blocks.
alias GemmAcc = array<GemmC, 4>;

// Across the 4 threads lid & ~3 .. +3: the sum of v.x and the largest v.y (cs is scratch).
fn gemm_reduce4(v: vec2<f32>, lid: u32) -> vec2<f32> {
    cs[2u * lid] = v.x;
    cs[2u * lid + 1u] = v.y;
    workgroupBarrier();
    let b = 2u * (lid & ~3u);
    let sum = cs[b] + cs[b + 2u] + cs[b + 4u] + cs[b + 6u];
    let top = max(max(cs[b + 1u], cs[b + 3u]), max(cs[b + 5u], cs[b + 7u]));
    workgroupBarrier();
    return vec2<f32>(sum, top);
}

// The factor token lt's inputs are stored with, from the largest |input| of its row;
// and slot lt's weight scale, from the largest |weight| of its row (the 4 loaders of the
// slot dequantize a quarter of it each). Both inverses are kept for gemm_unscale.
fn gemm_token_scale(lt: u32, lu: u32, largest: f32, slot: Slot) -> f32 {
    var top = 0.0;
    if (slot.live) {
        for (var u = lu; u < p.k / 8u; u += 4u) {
            let w = w_unit(slot.at, u);
            let a = max(abs(w.lo), abs(w.hi));
            top = max(top, max(max(a.x, a.y), max(a.z, a.w)));
        }
    }
    let wscale = gemm_pow2(gemm_reduce4(vec2<f32>(0.0, top), 4u * lt + lu).y);
    gemm_wscale = wscale.x;
    let s = gemm_pow2(largest);
    if (lu == 0u) {
        xinv[lt] = s.y;
        winv[lt] = wscale.y;
    }
    return s.x;
}

// A loader's unit: weights wu of slot lt and inputs xlo, xhi of token lt (already
// scaled), at column 8·lu + m of the step (m < 4 from lo, the others from hi).
fn gemm_store(lt: u32, lu: u32, wu: W8, xlo: vec4<f32>, xhi: vec4<f32>) {
    let wlo = vec4<f16>(wu.lo * gemm_wscale);
    let whi = vec4<f16>(wu.hi * gemm_wscale);
    let hlo = vec4<f16>(xlo);
    let hhi = vec4<f16>(xhi);
    let at = lt * GEMM_XS + 8u * lu;
    for (var m = 0u; m < 4u; m++) {
        ws[at + m] = wlo[m];
        ws[at + m + 4u] = whi[m];
        xs[at + m] = hlo[m];
        xs[at + m + 4u] = hhi[m];
    }
}

// Whether block b (tokens 16·(b / 4) .., slots 16·(b % 4) ..) of g's tile has anything
// to compute. Uniform across a subgroup, as the matrix operations need.
fn gemm_block_live(g: Gemm, b: u32) -> bool {
    return b < 16u && g.t0 + 16u * (b / 4u) < g.rows && gemm_slot(g.col0, 16u * (b % 4u)).live;
}

// Block b's sums c plus the K-step's products.
fn gemm_block(g: Gemm, b: u32, c: GemmC) -> GemmC {
    if (!gemm_block_live(g, b)) {
        return c;
    }
    let a_at = 16u * (b / 4u) * GEMM_XS;
    let b_at = 16u * (b % 4u) * GEMM_XS;
    let r = gemm_mma(gemm_load_a(a_at), gemm_load_b(b_at), c);
    return gemm_mma(gemm_load_a(a_at + 16u), gemm_load_b(b_at + 16u), r);
}

// The K-step's products added into the subgroup's blocks (every thread takes part: the
// matrix operations are its subgroup's; `busy` is the 4 × 4 tiles').
fn gemm_step(ids: GemmIds, g: Gemm, busy: bool, acc: ptr<function, GemmAcc>) {
    let sg = gemm_subgroup(ids);
    (*acc)[0] = gemm_block(g, sg.x, (*acc)[0]);
    (*acc)[1] = gemm_block(g, sg.x + sg.y, (*acc)[1]);
    (*acc)[2] = gemm_block(g, sg.x + 2u * sg.y, (*acc)[2]);
    (*acc)[3] = gemm_block(g, sg.x + 3u * sg.y, (*acc)[3]);
}

fn gemm_stage(b: u32, c: GemmC) {
    if (b < 16u) {
        gemm_store_c(c, 16u * (b / 4u) * GEMM_CS + 16u * (b % 4u));
    }
}

// The thread's 4 × 4 of gemm_core (tokens 4·ty + i by slots 4·tx + j) from the blocks,
// both scales undone.
fn gemm_unscale(ids: GemmIds, g: Gemm, acc: GemmAcc) -> array<vec4<f32>, 4> {
    let sg = gemm_subgroup(ids);
    gemm_stage(sg.x, acc[0]);
    gemm_stage(sg.x + sg.y, acc[1]);
    gemm_stage(sg.x + 2u * sg.y, acc[2]);
    gemm_stage(sg.x + 3u * sg.y, acc[3]);
    workgroupBarrier();
    var out: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        let t = 4u * g.ty + i;
        for (var j = 0u; j < 4u; j++) {
            let s = 4u * g.tx + j;
            out[i][j] = cs[t * GEMM_CS + s] * xinv[t] * winv[s];
        }
    }
    return out;
}

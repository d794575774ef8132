// gemm_tiles_f16.wgsl: gemm_core's tiles in f16, for devices with shader-f16 (the
// variant's source starts with `enable f16;`): half the workgroup memory and its traffic
// of gemm_tiles_f32.wgsl, and the products as packed f16 multiply-adds.
//
// Range: activations reach 1e3–1e4 and more, past what a product of f16s holds. Nothing
// is converted to f16 unscaled: a token's inputs are scaled by a power of two so that the
// largest |value| of its row is in [16, 32) (gemm_token_scale; the row's largest comes
// from a pass before the K loop), each loader's weight unit (8 values of a slot) likewise
// by its own power of two (gemm_store). A product is then below 1024, and the f16 sums
// stop at one unit: 8 products, below 8192 < 65504. Every unit's f16 sum is converted
// and multiplied into the f32 accumulators by its slot's unit scale (gemm_step), the
// token's scale undone at the end (gemm_unscale). Powers of two are exact, so the only
// roundings are each input and weight to f16 (2^-11 relative) and the 8-product sums;
// nothing a product could lose to f16's subnormals is above 2^-24 of the unit's largest
// product.

const GEMM_F16: bool = true;

struct GemmIds {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) n_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

// A thread's 4 tokens × 4 slots (gemm_core's Gemm.acc).
alias GemmAcc = array<vec4<f32>, 4>;

// (GEMM_KC, GEMM_BT / 4): xs[c·16 + g] holds tokens 4g .. 4g+3 at column c of the step.
var<workgroup> xs: array<vec4<f16>, 512>;
// (GEMM_KC, GEMM_BS / 4): ws[c·16 + g] holds slots 4g .. 4g+3 at column c of the step.
var<workgroup> ws: array<vec4<f16>, 512>;
// (GEMM_KU, GEMM_BS / 4): what the f16 weights of slots 4g .. 4g+3 in unit u of the step
// were scaled by, inverted: wsc[u·16 + g].
var<workgroup> wsc: array<vec4<f32>, 64>;
// What each token's stored inputs were scaled by, inverted.
var<workgroup> xinv: array<f32, 64>;
var<workgroup> scratch: array<vec2<f32>, 256>;

// Across the 4 threads lid & ~3 .. +3: the sum of v.x and the largest v.y.
fn gemm_reduce4(v: vec2<f32>, lid: u32) -> vec2<f32> {
    scratch[lid] = v;
    workgroupBarrier();
    let b = lid & ~3u;
    let sum = scratch[b].x + scratch[b + 1u].x + scratch[b + 2u].x + scratch[b + 3u].x;
    let top = max(max(scratch[b].y, scratch[b + 1u].y), max(scratch[b + 2u].y, scratch[b + 3u].y));
    workgroupBarrier();
    return vec2<f32>(sum, top);
}

// The factor token lt's inputs are stored with, from the largest |input| of its row
// (after the RMSNorm, where there is one); its inverse is kept for gemm_unscale. (The
// weights are scaled per unit, in gemm_store: `slot` is not read.)
fn gemm_token_scale(lt: u32, lu: u32, largest: f32, slot: Slot) -> f32 {
    let s = gemm_pow2(largest);
    if (lu == 0u) {
        xinv[lt] = s.y;
    }
    return s.x;
}

// A loader's unit: weights wu of slot lt (scaled to [16, 32) by their largest) and inputs
// xlo, xhi of token lt (already scaled), at column 8·lu + m of the step (m < 4 from lo,
// the others from hi).
fn gemm_store(lt: u32, lu: u32, wu: W8, xlo: vec4<f32>, xhi: vec4<f32>) {
    let a = max(abs(wu.lo), abs(wu.hi));
    let s = gemm_pow2(max(max(a.x, a.y), max(a.z, a.w)));
    let wlo = vec4<f16>(wu.lo * s.x);
    let whi = vec4<f16>(wu.hi * s.x);
    let hlo = vec4<f16>(xlo);
    let hhi = vec4<f16>(xhi);
    let at = 8u * lu * 16u + lt / 4u;
    let comp = lt % 4u;
    for (var m = 0u; m < 4u; m++) {
        ws[at + m * 16u][comp] = wlo[m];
        ws[at + (m + 4u) * 16u][comp] = whi[m];
        xs[at + m * 16u][comp] = hlo[m];
        xs[at + (m + 4u) * 16u][comp] = hhi[m];
    }
    wsc[lu * 16u + lt / 4u][comp] = s.y;
}

// The K-step's products of tokens 4·ty + i by slots 4·tx + j added into acc[i][j]: per
// unit, 8 columns of packed f16 multiply-adds, then the sum converted and scaled into f32.
// Threads that are not busy (their tile past the step's tokens or the weight's rows) skip it.
fn gemm_step(ids: GemmIds, g: Gemm, busy: bool, acc: ptr<function, GemmAcc>) {
    if (!busy) {
        return;
    }
    let ty = g.ty;
    let tx = g.tx;
    var a0 = (*acc)[0];
    var a1 = (*acc)[1];
    var a2 = (*acc)[2];
    var a3 = (*acc)[3];
    for (var u = 0u; u < GEMM_KU; u++) {
        var p0 = vec4<f16>(0.0h);
        var p1 = vec4<f16>(0.0h);
        var p2 = vec4<f16>(0.0h);
        var p3 = vec4<f16>(0.0h);
        for (var m = 0u; m < 8u; m++) {
            let c = 8u * u + m;
            let x = xs[c * 16u + ty];
            let w = ws[c * 16u + tx];
            p0 = fma(vec4<f16>(x.x), w, p0);
            p1 = fma(vec4<f16>(x.y), w, p1);
            p2 = fma(vec4<f16>(x.z), w, p2);
            p3 = fma(vec4<f16>(x.w), w, p3);
        }
        let s = wsc[u * 16u + tx];
        a0 = fma(vec4<f32>(p0), s, a0);
        a1 = fma(vec4<f32>(p1), s, a1);
        a2 = fma(vec4<f32>(p2), s, a2);
        a3 = fma(vec4<f32>(p3), s, a3);
    }
    *acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
}

// The accumulators as the op's outputs: each token's input scale undone.
fn gemm_unscale(ids: GemmIds, g: Gemm, acc: GemmAcc) -> array<vec4<f32>, 4> {
    var out = acc;
    for (var i = 0u; i < 4u; i++) {
        out[i] *= xinv[4u * g.ty + i];
    }
    return out;
}

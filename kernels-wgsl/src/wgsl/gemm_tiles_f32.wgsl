// gemm_tiles_f32.wgsl: gemm_core's tiles in f32 (every device): what the workgroup memory
// holds, how a loader stores its unit and how a K-step is summed. The f16 twin is
// gemm_tiles_f16.wgsl; gemm_core.wgsl calls the same functions of either.

const GEMM_F16: bool = false;

struct GemmIds {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) n_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

// A thread's 4 tokens × 4 slots (gemm_core's Gemm.acc).
alias GemmAcc = array<vec4<f32>, 4>;

// (GEMM_KC, GEMM_BT / 4): xs[c·16 + g] holds tokens 4g .. 4g+3 at column c of the step.
var<workgroup> xs: array<vec4<f32>, 512>;
// (GEMM_KC, GEMM_BS / 4): ws[c·16 + g] holds slots 4g .. 4g+3 at column c of the step.
var<workgroup> ws: array<vec4<f32>, 512>;

// Across the 4 threads lid & ~3 .. +3: the sum of v.x and the largest v.y (xs is scratch).
fn gemm_reduce4(v: vec2<f32>, lid: u32) -> vec2<f32> {
    xs[lid] = vec4<f32>(v, 0.0, 0.0);
    workgroupBarrier();
    let b = lid & ~3u;
    let sum = xs[b].x + xs[b + 1u].x + xs[b + 2u].x + xs[b + 3u].x;
    let top = max(max(xs[b].y, xs[b + 1u].y), max(xs[b + 2u].y, xs[b + 3u].y));
    workgroupBarrier();
    return vec2<f32>(sum, top);
}

// The factor a token's inputs are stored with: f32 tiles take them as they are.
fn gemm_token_scale(lt: u32, lu: u32, largest: f32, slot: Slot) -> f32 {
    return 1.0;
}

// A loader's unit: weights wu of slot lt and inputs xlo, xhi of token lt, at column
// 8·lu + m of the step (m < 4 from lo, the others from hi).
fn gemm_store(lt: u32, lu: u32, wu: W8, xlo: vec4<f32>, xhi: vec4<f32>) {
    let at = 8u * lu * 16u + lt / 4u;
    let comp = lt % 4u;
    for (var m = 0u; m < 4u; m++) {
        ws[at + m * 16u][comp] = wu.lo[m];
        ws[at + (m + 4u) * 16u][comp] = wu.hi[m];
        xs[at + m * 16u][comp] = xlo[m];
        xs[at + (m + 4u) * 16u][comp] = xhi[m];
    }
}

// The K-step's products of tokens 4·ty + i by slots 4·tx + j added into acc[i][j].
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
    for (var c = 0u; c < GEMM_KC; c++) {
        let x = xs[c * 16u + ty];
        let w = ws[c * 16u + tx];
        a0 += x.x * w;
        a1 += x.y * w;
        a2 += x.z * w;
        a3 += x.w * w;
    }
    *acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
}

// The accumulators as the op's outputs (f32 tiles: as they are).
fn gemm_unscale(ids: GemmIds, g: Gemm, acc: GemmAcc) -> array<vec4<f32>, 4> {
    return acc;
}

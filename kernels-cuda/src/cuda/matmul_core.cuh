// matmul_core.cuh: the matrix-vector core of the seven matmul files, for F32, F16 and
// BF16 weights (packed weights take the dp4a matvec and the int8 tensor-core matmul,
// cuda/mv/ and matmul_mmq.cu), every step in tiles of 8 tokens: f16 tensor-core operands
// would round what these matmuls hold to f32. A warp computes one output row (weight
// row) for a tile of up to TILE_T tokens: each lane takes units of 8 columns, converts
// the weight there to f32 once and accumulates it against every token of the tile in
// f32; a shuffle reduction gives the sums. MV_WARPS rows a block, so that the RMSNorm
// variants compute the tile's 1/rms once per block. Same math as matmul_core.wgsl,
// which the conformance suite verified.
//
// The op file defines, before including this:
//   MM_NORM    1: the input is RMSNorm(x) · norm, folded into the read (never stored)
//   MM_GATED   1: two weights (gate p.w, up p.w2) share the input; epilogue gets both
//   mm_epilogue(p, at, g, u): the value stored at p.out[at]
// Arguments: MatmulArgs (rows_sel, k, n, row_bytes, x, out, w, w2, res, norm, eps).

#define MV_WARPS 4u

// Defined by the op file after this include.
__device__ __forceinline__ float mm_epilogue(const MatmulArgs& p, unsigned int at, float g, float u);

// Four input values of token `t` (an arena row) from column c.
__device__ __forceinline__ f32x4 x_raw4(const MatmulArgs& p, unsigned int t, unsigned int c) {
    const float* x = p.x + t * p.k + c;
    return f32x4{x[0], x[1], x[2], x[3]};
}

// x · inv_rms · norm, the RMSNorm folded into the input read.
__device__ __forceinline__ f32x4 x_normed4(const MatmulArgs& p, unsigned int t, unsigned int c, float inv_rms) {
    f32x4 v = x_raw4(p, t, c);
    return f32x4{v.x * inv_rms * vector_at(p.norm, c), v.y * inv_rms * vector_at(p.norm, c + 1u),
                 v.z * inv_rms * vector_at(p.norm, c + 2u), v.w * inv_rms * vector_at(p.norm, c + 3u)};
}

// 1 / sqrt(mean(x²) + eps) of tokens t0 .. t0 + nt into inv_rms (nt <= max_t), the block's
// warps taking tokens in turn. Every thread must call it.
__device__ __forceinline__ void rms_tokens(const MatmulArgs& p, unsigned int t0, unsigned int nt, float* inv_rms) {
    unsigned int warp = threadIdx.x / WARP;
    unsigned int lane = threadIdx.x % WARP;
    for (unsigned int t = warp; t < nt; t += blockDim.x / WARP) {
        float acc = 0.0f;
        for (unsigned int c = lane * 4u; c < p.k; c += WARP * 4u) {
            f32x4 v = x_raw4(p, t0 + t, c);
            acc += dot4(v, v);
        }
        acc = warp_sum(acc);
        if (lane == 0u) {
            inv_rms[t] = 1.0f / sqrtf(acc / (float)p.k + p.eps);
        }
    }
    __syncthreads();
}

// Grid: (row blocks split x then y, token tiles z); block MV_WARPS warps.
extern "C" __global__ void KILN_MAIN(const __grid_constant__ MatmulArgs p) {
    unsigned int rows = p.step[p.rows_sel];
    unsigned int t0 = blockIdx.z * TILE_T;
    unsigned int nt = min(TILE_T, rows - min(t0, rows));
    unsigned int warp = threadIdx.x / WARP;
    unsigned int lane = threadIdx.x % WARP;
    unsigned int r = (blockIdx.y * gridDim.x + blockIdx.x) * MV_WARPS + warp;
#if MM_NORM
    __shared__ float inv_rms[TILE_T]; // (TILE_T) 1/rms of the tile's tokens
    rms_tokens(p, t0, nt, inv_rms);
#endif
    if (r >= p.n || nt == 0u) {
        return;
    }
    float acc[TILE_T];  // (TILE_T) x · gate row
    float acc2[TILE_T]; // (TILE_T) x · up row (gated variants)
#pragma unroll
    for (unsigned int t = 0u; t < TILE_T; t++) {
        acc[t] = 0.0f;
        acc2[t] = 0.0f;
    }
    // Row r of the weight (and of the second one): a byte offset from its start.
    unsigned int row = r * p.row_bytes;
    for (unsigned int u = lane; u < p.k / 8u; u += WARP) {
        W8 wu = w_unit(p.w, row, u);
#if MM_GATED
        W8 wu2 = w_unit(p.w2, row, u);
#endif
        u32x2 c = unit_cols(u);
        // Loops over tokens run to the constant TILE_T so the accumulators stay registers.
#pragma unroll
        for (unsigned int t = 0u; t < TILE_T; t++) {
            if (t < nt) {
#if MM_NORM
                f32x4 xa = x_normed4(p, t0 + t, c.x, inv_rms[t]);
                f32x4 xb = x_normed4(p, t0 + t, c.y, inv_rms[t]);
#else
                f32x4 xa = x_raw4(p, t0 + t, c.x);
                f32x4 xb = x_raw4(p, t0 + t, c.y);
#endif
                acc[t] += dot4(wu.lo, xa) + dot4(wu.hi, xb);
#if MM_GATED
                acc2[t] += dot4(wu2.lo, xa) + dot4(wu2.hi, xb);
#endif
            }
        }
    }
#pragma unroll
    for (unsigned int t = 0u; t < TILE_T; t++) {
        acc[t] = warp_sum(acc[t]);
#if MM_GATED
        acc2[t] = warp_sum(acc2[t]);
#endif
    }
    // Lane t stores token t of the tile (registers indexed by the constant loop).
#pragma unroll
    for (unsigned int t = 0u; t < TILE_T; t++) {
        if (lane == t && t < nt) {
            unsigned int at = (t0 + t) * p.n + r;
            p.out[at] = mm_epilogue(p, at, acc[t], acc2[t]);
        }
    }
}

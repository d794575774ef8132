// matmul_mma.cu: the prefill path of the quantized matmuls (more than 32 tokens; the
// weights in the packed layout, read by pw_unit, where W_PACKED): the
// same op (same arguments, same epilogue hooks as matmul_core.cuh) on tensor cores. A block
// of MMA_WARPS warps computes a tile of MMA_BT tokens × MMA_BN output columns: for each
// MMA_BK-column slice of k (one quant block) it converts the input tile to f16 and
// dequantizes the weight tile to f16 in shared memory, then every warp runs mma.sync
// m16n8k16 with f32 accumulators over its 16 tokens × MMA_BN columns. The epilogue is the
// op's. Needs sm_80+ (the host picks the matvec tiles below that); only the weight types
// that define MM_TENSOR_CORES 1 have it.

#if MM_TENSOR_CORES

#define MMA_WARPS 4u
#define MMA_BT 64u  // tokens of a block tile (16 per warp)
#define MMA_BN 64u  // output columns (weight rows) of a block tile
#define MMA_BK 32u  // columns of k per slice (one quant block)
#define MMA_PAD 8u  // halves of padding per shared row, against bank conflicts

// f32 to the tensor-core input type, f16 (bit patterns).
__device__ __forceinline__ unsigned short mma_in(float x) { return f32_to_f16(x); }

// d += a (16×16, row) · b (16×8, col), f32 accumulators.
__device__ __forceinline__ void mma_16816(float* d, const unsigned int* a, const unsigned int* b) {
    ptx_mma_m16n8k16(d, a, b);
}

// Dequantize rows n0 .. n0 + MMA_BN of the weight starting at `w`, columns k0 .. +MMA_BK,
// into ws (MMA_BN, MMA_BK + MMA_PAD); zeros past n or k (so that no garbage meets a zero).
__device__ __forceinline__ void load_w_tile(const MatmulArgs& p, const unsigned char* __restrict__ w, unsigned int n0,
                                            unsigned int k0, unsigned short* ws) {
    const unsigned int units = MMA_BK / 8u;
    for (unsigned int i = threadIdx.x; i < MMA_BN * units; i += blockDim.x) {
        unsigned int rr = i / units;
        unsigned int u = k0 / 8u + i % units;
        W8 wu = W8{f32x4{0.0f, 0.0f, 0.0f, 0.0f}, f32x4{0.0f, 0.0f, 0.0f, 0.0f}};
        if (n0 + rr < p.n && u < p.k / 8u) {
#if W_PACKED
            // Packed (src/repack.rs): the planes of the (n, k) weight at w.
            PackedW pw = pw_make(w, p.n, p.k / 32u);
            wu = pw_unit(pw, n0 + rr, u);
#else
            wu = w_unit(w, (n0 + rr) * p.row_bytes, u);
#endif
        }
        // Every unit of a slice lands inside it: k0 is a multiple of 32 and so are the
        // quantized blocks.
        u32x2 c = unit_cols(u);
        unsigned short* dst = ws + rr * (MMA_BK + MMA_PAD);
        unsigned int lo = c.x - k0;
        unsigned int hi = c.y - k0;
        dst[lo] = mma_in(wu.lo.x);
        dst[lo + 1u] = mma_in(wu.lo.y);
        dst[lo + 2u] = mma_in(wu.lo.z);
        dst[lo + 3u] = mma_in(wu.lo.w);
        dst[hi] = mma_in(wu.hi.x);
        dst[hi + 1u] = mma_in(wu.hi.y);
        dst[hi + 2u] = mma_in(wu.hi.z);
        dst[hi + 3u] = mma_in(wu.hi.w);
    }
}

// The B fragments of n-tile `j` (8 weight rows) at slice column kk, and mma into acc.
__device__ __forceinline__ void mma_row_tile(const unsigned short* ws, unsigned int j, unsigned int kk,
                                             const unsigned int* a, float* acc) {
    unsigned int lane = threadIdx.x % WARP;
    const unsigned short* row = ws + (8u * j + lane / 4u) * (MMA_BK + MMA_PAD) + kk + 2u * (lane % 4u);
    unsigned int b[2] = {*reinterpret_cast<const unsigned int*>(row), *reinterpret_cast<const unsigned int*>(row + 8u)};
    mma_16816(acc, a, b);
}

// Grid: (column tiles split x then y, token tiles z); block MMA_WARPS warps.
extern "C" __global__ void __launch_bounds__(128) KILN_MMA(const __grid_constant__ MatmulArgs p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned int rows = p.step[p.rows_sel];
    unsigned int t0 = blockIdx.z * MMA_BT;
    unsigned int nt = min(MMA_BT, rows - min(t0, rows));
    unsigned int n0 = (blockIdx.y * gridDim.x + blockIdx.x) * MMA_BN;
    unsigned int warp = threadIdx.x / WARP;
    unsigned int lane = threadIdx.x % WARP;
    if (nt == 0u || n0 >= p.n) {
        return; // uniform across the block
    }
    __shared__ __align__(16) unsigned short xs[MMA_BT * (MMA_BK + MMA_PAD)];  // (tokens, k slice)
    __shared__ __align__(16) unsigned short ws[MMA_BN * (MMA_BK + MMA_PAD)];  // (gate rows, k slice)
#if MM_GATED
    __shared__ __align__(16) unsigned short ws2[MMA_BN * (MMA_BK + MMA_PAD)]; // (up rows, k slice)
#endif
#if MM_NORM
    __shared__ float inv_rms[MMA_BT]; // (MMA_BT) 1/rms of the tile's tokens
    rms_tokens(p, t0, nt, inv_rms);
#endif
    float acc[MMA_BN / 8u][4];  // (n-tiles, fragment) x · gate rows
    float acc2[MMA_BN / 8u][4]; // (n-tiles, fragment) x · up rows
#pragma unroll
    for (unsigned int j = 0u; j < MMA_BN / 8u; j++) {
#pragma unroll
        for (unsigned int e = 0u; e < 4u; e++) {
            acc[j][e] = 0.0f;
            acc2[j][e] = 0.0f;
        }
    }
    for (unsigned int k0 = 0u; k0 < p.k; k0 += MMA_BK) {
        // The input tile, converted once for all warps; zeros past the tokens and k.
        for (unsigned int i = threadIdx.x; i < MMA_BT * MMA_BK; i += blockDim.x) {
            unsigned int t = i / MMA_BK;
            unsigned int c = k0 + i % MMA_BK;
            float v = 0.0f;
            if (t < nt && c < p.k) {
                v = p.x[(t0 + t) * p.k + c];
#if MM_NORM
                v *= inv_rms[t] * vector_at(p.norm, c);
#endif
            }
            xs[t * (MMA_BK + MMA_PAD) + i % MMA_BK] = mma_in(v);
        }
        load_w_tile(p, p.w, n0, k0, ws);
#if MM_GATED
        load_w_tile(p, p.w2, n0, k0, ws2);
#endif
        __syncthreads();
#pragma unroll
        for (unsigned int kk = 0u; kk < MMA_BK; kk += 16u) {
            // A fragments: rows g and g + 8 of the warp's 16 tokens, columns 2c and 2c + 8.
            const unsigned short* xa = xs + (16u * warp + lane / 4u) * (MMA_BK + MMA_PAD) + kk + 2u * (lane % 4u);
            const unsigned int stride8 = 8u * (MMA_BK + MMA_PAD);
            unsigned int a[4] = {*reinterpret_cast<const unsigned int*>(xa),
                                 *reinterpret_cast<const unsigned int*>(xa + stride8),
                                 *reinterpret_cast<const unsigned int*>(xa + 8u),
                                 *reinterpret_cast<const unsigned int*>(xa + stride8 + 8u)};
#pragma unroll
            for (unsigned int j = 0u; j < MMA_BN / 8u; j++) {
                mma_row_tile(ws, j, kk, a, acc[j]);
#if MM_GATED
                mma_row_tile(ws2, j, kk, a, acc2[j]);
#endif
            }
        }
        __syncthreads();
    }
    // C fragment: e = 0, 1 at token row g, columns 2c, 2c + 1; e = 2, 3 at row g + 8.
#pragma unroll
    for (unsigned int j = 0u; j < MMA_BN / 8u; j++) {
#pragma unroll
        for (unsigned int e = 0u; e < 4u; e++) {
            unsigned int t = 16u * warp + lane / 4u + (e >= 2u ? 8u : 0u);
            unsigned int col = n0 + 8u * j + 2u * (lane % 4u) + (e & 1u);
            if (t < nt && col < p.n) {
                unsigned int at = (t0 + t) * p.n + col;
                p.out[at] = mm_epilogue(p, at, acc[j][e], acc2[j][e]);
            }
        }
    }
#else
    // Tensor-core mma.sync m16n8k16 needs sm_80; the host never launches this below.
    (void)p;
    ptx_trap();
#endif
}

#endif // MM_TENSOR_CORES

// matmul_wgmma.cu: the prefill matmul of packed weights on Hopper's warpgroup MMA
// (sm_90a; other targets compile a trap and the host never launches it there): the same
// arguments (MatvecArgs), q8_1 activations and epilogues as matmul_mmq.cu, whose module it
// is appended to (it uses that file's stages, copies and the type's reader, mmq/<dtype>.cuh).
//
// On Hopper, mma.sync int8 cannot approach the tensor-core peak: every 32-value unit's
// integer tile costs ~2 FP32 ops an output element to fold into f32, against 32 int8 MACs.
// Here both operands are converted to f16 once per block tile, in wgmma's K-major
// core-matrix layout, and wgmma.m64n64k16 accumulates in f32 across the whole K with no
// per-unit fold: the weights' scales are applied in their conversion (amortized over the
// 64 tokens of the tile), the activations' d in theirs (amortized over the 128 rows).
//
// f16 rather than bf16: the activations are the quantizer's q8_1 (RMSNorm folded in, as
// mmq reads them), q·d, and q·d exceeds f16's range past 65504; each token's values are
// scaled by a power of two s_t (exact) that puts its largest block d in [64, 128) (so
// |q·d·s_t| < 2^14), and the output is divided by it (exact) in the epilogue, as
// kernels-wgsl's gemm_tiles_f16.wgsl does. f16 keeps 11 bits of q·d·s_t (8 + 11 bits
// exactly: 2^-12 relative), bf16 would keep 8 (2^-9, near q8_1's own error): f16 adds
// next to nothing to mmq's error.
//
// A block is two warpgroups (MQ_THREADS) over 64 tokens (wgmma's M) × MQ_BN = 128 weight
// rows (warpgroup w: rows 64w .. 64w + 63, wgmma's N = 64). k is walked one 32-value unit
// at a time through matmul_mmq.cu's cp.async stages (raw quants, scales, activation
// quants, WG_STAGES deep): while unit u + 1's copies are in flight, the block converts
// unit u's stage to f16 (two buffers in dynamic shared memory: the conversion of u
// overlaps the wgmma of u - 1) and each warpgroup issues two wgmma (k16) a weight on it.
//
// Entries (src/mmq.rs: wgmma_entry): matmul_wgmma_<dtype>[_add|_swiglu|_geglu] →
// wg_matmul<EPI>.

namespace {

#define WG_BT 64u  // tokens of a block tile: wgmma's M
#define WG_LBO 144u // core matrices adjacent in K: 128 + 16 bytes (bank groups, as attention_prefill_wgmma.cu)
#define WG_SBO (4u * WG_LBO + 16u) // adjacent in rows (32 columns: 4 core matrices)

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The f16 index of element (row, k < 32) of a K-major operand in that layout.
__device__ __forceinline__ unsigned int wg_core(unsigned int row, unsigned int k) {
    return ((row / 8u) * WG_SBO + (k / 8u) * WG_LBO) / 2u + (row % 8u) * 8u + k % 8u;
}

// One f16 buffer of a unit: A (64 tokens × 32) and G weights' B (128 rows × 32).
template <unsigned int G>
struct WgBuf {
    unsigned short a[(WG_BT / 8u) * WG_SBO / 2u];
    unsigned short b[G][(MQ_BN / 8u) * WG_SBO / 2u];
};

// Static shared memory: as many stages as fit beside the token scales (4 at most); the
// two f16 buffers are dynamic (src/mmq.rs: wgmma_shared_bytes), as wgmma's operands must
// be for the emulator's twin.
template <unsigned int G>
struct WgDepth {
    static constexpr unsigned int stage = sizeof(MqStage<WG_BT, G>);
    static constexpr unsigned int rest = MQ_SMEM - 4u * WG_BT;
    static constexpr unsigned int stages = 4u * stage <= rest ? 4u : 3u * stage <= rest ? 3u : 2u;
};

// 8 values to 4 words of two f16 (round to nearest even), low first.
__device__ __forceinline__ uint4 wg_pack8(const float* v) {
    unsigned int w[4];
#pragma unroll
    for (unsigned int i = 0u; i < 4u; i++) {
        w[i] = (unsigned int)mv_to_f16(v[2u * i]) | ((unsigned int)mv_to_f16(v[2u * i + 1u]) << 16);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

// Four signed bytes of a word, as floats.
__device__ __forceinline__ void wg_bytes(unsigned int w, float* v) {
#pragma unroll
    for (unsigned int i = 0u; i < 4u; i++) {
        v[i] = __int2float_rn((int)(signed char)((w >> (8u * i)) & 0xFFu));
    }
}

// Convert stage s (unit u) into buffer f: A's core-matrix row (token tid / 4, values
// 8(tid % 4) ..) from the swizzled quants times d·s_t; B's two (row tid / 2, values
// 8h .. and 16 + 8h .., h = tid % 2) from the type's mq_frag words and mq_scales.
template <unsigned int G>
__device__ __forceinline__ void wg_convert(const MqStage<WG_BT, G>& s, WgBuf<G>& f, const float* tok_scale,
                                           unsigned int bit, unsigned int u) {
    unsigned int tid = threadIdx.x;
    {
        unsigned int t = tid / 4u, j = tid % 4u;
        uint2 q = *reinterpret_cast<const uint2*>(s.xq + mq_swz(t, j / 2u) + 8u * (j % 2u));
        float d = __fmul_rn(mv_lo(s.xds[t]), tok_scale[t]);
        float v[8];
        wg_bytes(q.x, v);
        wg_bytes(q.y, v + 4);
#pragma unroll
        for (unsigned int i = 0u; i < 8u; i++) {
            v[i] = __fmul_rn(v[i], d);
        }
        *reinterpret_cast<uint4*>(f.a + wg_core(t, 8u * j)) = wg_pack8(v);
    }
    unsigned int r = tid / 2u, h = tid % 2u;
#pragma unroll
    for (unsigned int g = 0u; g < G; g++) {
        MqScale w = mq_scales(s.ws[g] + (r & ~1u) * MQ_SB, r & 1u, bit, u);
        float lo[8], hi[8]; // values 8h .., 16 + 8h ..
#pragma unroll
        for (unsigned int i = 0u; i < 2u; i++) {
            uint2 b = mq_frag(s.wq[g], s.wh[g], r, 2u * h + i);
            wg_bytes(b.x, lo + 4u * i);
            wg_bytes(b.y, hi + 4u * i);
        }
        float alo = w.a, ahi = w.a;
        if constexpr (MQ_HALVES) {
            alo = __fmul_rn(w.a, __int2float_rn(w.s0));
            ahi = __fmul_rn(w.a, __int2float_rn(w.s1));
        }
#pragma unroll
        for (unsigned int i = 0u; i < 8u; i++) {
            lo[i] = __fmaf_rn(alo, lo[i], w.m);
            hi[i] = __fmaf_rn(ahi, hi[i], w.m);
        }
        *reinterpret_cast<uint4*>(f.b[g] + wg_core(r, 8u * h)) = wg_pack8(lo);
        *reinterpret_cast<uint4*>(f.b[g] + wg_core(r, 16u + 8u * h)) = wg_pack8(hi);
    }
}
#endif

// Grid: (ceil(rows / 64) token tiles, ceil(n / 128) row tiles, 1); block MQ_THREADS.
template <int EPI>
__device__ __forceinline__ void wg_matmul(const MatvecArgs& a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr unsigned int G = MV_GATED(EPI) ? 2u : 1u;
    constexpr unsigned int S = WgDepth<G>::stages;
    constexpr unsigned int B = 2u; // f16 buffers: unit u's conversion beside u - 1's wgmma
    static_assert(S * sizeof(MqStage<WG_BT, G>) + 4u * WG_BT <= MQ_SMEM, "the stages fit the static shared memory");
    static_assert(sizeof(WgBuf<G>) % 16u == 0u, "every buffer 16-byte aligned (wgmma descriptors)");
    __shared__ __align__(16) MqStage<WG_BT, G> st[S];
    __shared__ float tok_scale[WG_BT];
    extern __shared__ __align__(128) unsigned char wg_smem[];
    WgBuf<G>* fb = reinterpret_cast<WgBuf<G>*>(wg_smem); // (B)
    unsigned int rows = a.step[a.rows_sel];
    unsigned int t0 = blockIdx.x * WG_BT;
    unsigned int n0 = blockIdx.y * MQ_BN;
    if (t0 >= rows || n0 >= a.n) {
        return; // uniform across the block
    }
    unsigned int nb = a.k / 32u;
    unsigned int tid = threadIdx.x;
    MqCopies cp = mq_copies<WG_BT>(a, t0, rows, n0, nb);
#pragma unroll
    for (unsigned int p = 0u; p + 1u < S; p++) {
        if (p < nb) {
            mq_load<WG_BT, G>(a, st[p], cp, nb, p);
        }
        ptx_cp_async_commit();
    }
    // s_t: 2^(6 - e) for the largest block d of token t, 2^e <= d < 2^(e+1) (1 for a
    // token of zeros). Two threads a token, each over half its blocks.
    if (tid < 2u * WG_BT) {
        unsigned int t = min(t0 + tid / 2u, rows - 1u);
        float m = 0.0f;
        for (unsigned int b = tid % 2u; b < nb; b += 2u) {
            m = fmaxf(m, fabsf(mv_lo(a.ds[t * nb + b])));
        }
        m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
        unsigned int e = (__float_as_uint(m) >> 23) & 0xFFu;
        if (tid % 2u == 0u) {
            tok_scale[tid / 2u] = e == 0u ? 1.0f : __uint_as_float((260u - e) << 23);
        }
    }
    unsigned int r = tid / 2u; // wg_convert's weight row
    unsigned int bit = mq_row_bit(mq_scale_row(min(n0 + r, a.n - 1u), nb));
    unsigned int wgi = tid / 128u; // warpgroup: rows 64·wgi .. of the block tile
    // Not zeroed: unit 0's first wgmma overwrites them (a non-wgmma write would serialize
    // the wgmma pipeline, ptxas C7515); k >= 32, so there is a unit 0.
    float acc[G][32];
#pragma unroll 1
    for (unsigned int u = 0u; u < nb; u++) {
        mq_wait<S - 2u>();
        // This warp's wgmma that read buffer u % B (unit u - B) are done.
        if constexpr (B == 1u) {
            ptx_wgmma_wait<0>();
        } else {
            ptx_wgmma_wait<1>();
        }
        // Unit u landed everywhere; every warp is done with stage (u - 1) % S (converted
        // last iteration) and its wgmma of buffer u % B.
        __syncthreads();
        unsigned int next = u + S - 1u;
        if (next < nb) {
            mq_load<WG_BT, G>(a, st[next % S], cp, nb, next);
        }
        ptx_cp_async_commit();
        WgBuf<G>& f = fb[u % B];
        wg_convert<G>(st[u % S], f, tok_scale, bit, u);
        // The generic stores above are read by wgmma's async proxy.
        ptx_fence_proxy_async();
        __syncthreads();
        ptx_wgmma_fence();
#pragma unroll
        for (unsigned int g = 0u; g < G; g++) {
#pragma unroll
            for (unsigned int kk = 0u; kk < 2u; kk++) {
                ptx_wgmma_m64n64k16_ss(acc[g], ptx_wgmma_desc(f.a + wg_core(0u, 16u * kk), WG_LBO, WG_SBO),
                                       ptx_wgmma_desc(f.b[g] + wg_core(64u * wgi, 16u * kk), WG_LBO, WG_SBO),
                                       u > 0u || kk > 0u ? 1 : 0);
            }
        }
        ptx_wgmma_commit();
    }
    ptx_wgmma_wait<0>();
#pragma unroll
    for (unsigned int g = 0u; g < G; g++) {
        ptx_wgmma_hold(acc[g]);
    }
    ptx_cp_async_wait0();
    // acc[g][4i + e]: token 16w + lane/4 + 8(e / 2) (w the warp in the warpgroup), row
    // 64·wgi + 8i + 2(lane % 4) + e % 2 of the block tile.
    unsigned int lane = tid % MV_WARP;
    unsigned int w = (tid % 128u) / MV_WARP;
#pragma unroll
    for (unsigned int e = 0u; e < 32u; e++) {
        unsigned int tt = 16u * w + lane / 4u + 8u * ((e % 4u) / 2u);
        unsigned int t = t0 + tt;
        unsigned int col = n0 + 64u * wgi + 8u * (e / 4u) + 2u * (lane % 4u) + (e & 1u);
        if (t < rows && col < a.n) {
            float inv = 1.0f / tok_scale[tt]; // a power of two: exact
            unsigned long long at = (unsigned long long)t * a.out_stride + col;
            mq_store<EPI>(a, at, acc[0][e] * inv, acc[G - 1u][e] * inv);
        }
    }
#else
    // wgmma needs sm_90a; the host launches these entries only there (mmq.rs).
    (void)a;
    ptx_trap();
#endif
}

} // namespace

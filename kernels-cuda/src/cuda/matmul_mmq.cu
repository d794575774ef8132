// matmul_mmq.cu: the prefill matmul of packed weights on the int8 tensor cores (steps of
// more than 32 rows on sm_80+): out = epilogue(x · Wᵀ) from the q8_1 activations the
// quantizer wrote once per launch (mv/quantize_q8_1.cu, the RMSNorm folded in) and the
// packed weights (src/repack.rs), as llama.cpp's mmq. The arguments are the matvec's
// (MatvecArgs): the same call shape, the same scratch, the same epilogues.
//
// A block of 8 warps computes MQ_BN = 128 weight rows × BT tokens (BT = 128, or 64 for
// the GLUs, whose gate and up are both in flight; 32 where larger tiles would leave SMs
// idle: src/mmq.rs's tile_for). k is walked one 32-value unit at a
// time through MQ_STAGES shared-memory stages filled by cp.async (16-byte copies of the
// activation quants and the weights' quant plane, 4- to 16-byte copies of the scales):
// the copies of units u + 1 .. u + MQ_STAGES - 1 are in flight while the warps multiply
// unit u. Warps are 2 (tokens) × 4 (rows): a warp owns BT / 2 tokens × 32 rows, MT × 4
// tiles of mma.sync m16n8k32 s8 (A: tokens, by ldmatrix; B: 8 weight rows, one shared
// word per lane unpacked to signed bytes by the type's mq_frag). Each unit's integer
// tile is scaled into f32 accumulators at once: acc += (a_w · d_x) · Σq_w q_x + m_w · s_x
// (a_w, m_w the unit's weight scale and offset from mq_scales; d_x and s_x = d_x · Σq_x
// from the activation block's q8_1 word: mv_s).
//
// Shared rows of 32 bytes (activation quants, Q8_0's weight quants) put their two
// 16-byte halves in swapped order on rows 4-7 of every 8 (MQ_SWZ): ldmatrix's 8-row
// phases and the B fragments' words then fall in distinct banks without padding; the
// 16-byte rows of the 4-bit quants need nothing.
//
// The host prepends MatvecArgs' declaration and the type's reader (mmq/<dtype>.cuh, which
// defines MQ_QB, MQ_HB, MQ_SB, MQ_MIN, MQ_HALVES, MQ_SG, MQ_CG, mq_copy_scales, mq_row_bit,
// mq_frag and mq_scales) and
// appends one entry per (tile, epilogue) (src/mmq.rs):
// matmul_mmq_<dtype>_t<BT>[_add|_swiglu|_geglu] → mq_matmul<BT, EPI>.

#include "mv/common.cuh"
#include "mv/bits.cuh"

// Internal linkage for everything below, the shared stages above all: a static in an
// inline or template function is otherwise one object per process for the host
// emulator's linker (STB_GNU_UNIQUE), shared by every type's module of this file.
namespace {

// A unit's weight scale and offset: its values are a·q + m over the integers q that
// mq_frag gives (m = 0 where MQ_MIN is 0); where MQ_HALVES is 1, a·(s0·q) over values
// 0-15 and a·(s1·q) over 16-31 (Q6_K's scales of 16 values).
struct MqScale {
    float a;
    float m;
    int s0;
    int s1;
};

// Byte offset of 16-byte half j of row r of a swizzled 32-byte-row tile.
__device__ __forceinline__ unsigned int mq_swz(unsigned int r, unsigned int j) {
    return 32u * r + 16u * (j ^ ((r >> 2) & 1u));
}

#include "mmq/weights.cuh"

#define MQ_THREADS 256u
#define MQ_BN 128u      // weight rows of a block tile
#define MQ_SMEM 49152u  // static shared memory a block may have
#define MQ_BIAS 0x4B400000 // 1.5·2^23 as f32 bits
#define MQ_BIAS_F 12582912.0f
// Epilogues (mv/matvec.cu's codes).
#define MV_STORE 0
#define MV_ADD 1
#define MV_SWIGLU 2
#define MV_GEGLU 3
#define MV_GATED(EPI) ((EPI) == MV_SWIGLU || (EPI) == MV_GEGLU)

// gelu.cuh's f16 roundings through mv/common.cuh's conversions (no prelude here).
__device__ __forceinline__ float f16_to_f32(unsigned short h) { return mv_f16(h); }
__device__ __forceinline__ unsigned short f32_to_f16(float f) { return mv_to_f16(f); }

#include "gelu.cuh"

// One stage: unit u of the tile's BT tokens and MQ_BN rows of G weights.
template <unsigned int BT, unsigned int G>
struct MqStage {
    signed char xq[BT * 32u];                // (tokens, 32) swizzled activation quants
    unsigned int xds[BT];                    // (tokens) (f16 d, int16 Σq)
    unsigned char wq[G][MQ_BN * MQ_QB];      // (rows, MQ_QB) quants (32-byte rows swizzled)
    unsigned int wh[G][MQ_BN * MQ_HW];       // (rows, MQ_HW) high bits (unused without)
    unsigned char ws[G][MQ_BN * MQ_SB];      // (rows, MQ_SB) staged scale bytes
};

// As many stages as fit (4 at most): fewer copies in flight for the larger tiles.
template <unsigned int BT, unsigned int G>
struct MqDepth {
    static constexpr unsigned int bytes = sizeof(MqStage<BT, G>);
    static constexpr unsigned int stages = 4u * bytes <= MQ_SMEM ? 4u : 3u * bytes <= MQ_SMEM ? 3u : 2u;
};

// Wait until at most N committed groups of this thread's copies are in flight.
template <unsigned int N>
__device__ __forceinline__ void mq_wait() {
    if constexpr (N == 0u) {
        ptx_cp_async_wait0();
    } else if constexpr (N == 1u) {
        ptx_cp_async_wait1();
    } else {
        ptx_cp_async_wait2();
    }
}

// What this thread copies into every stage (at most one piece of each kind: a stage has
// at most MQ_THREADS of each), as 32-bit offsets of unit 0 in their planes (a matrix is
// under 4 GiB, and so is the q8_1 scratch); unit u adds u times the piece's stride. Rows
// past the step repeat its last row, rows past n the weight's last row (neither is
// stored).
struct MqCopies {
    unsigned int x;   // activation quants: token t, half j: t·k + 16j
    unsigned int xds; // its (d, s): t·nb
    unsigned int w;   // weight quants: row r, half j: r·nb·MQ_QB + 16j
    unsigned int h;   // high bits: mq_scale_row(r, nb)·MQ_HB + 4·word
    unsigned int s;   // the scales of rows MQ_CG·i ..: mq_scale_row
};

// Where row r's unit 0 is in the scale plane, counted in units: r·nb for the K-quants
// (the record is unit / 8), for the 32-value types its record in the groups of MQ_SG
// rows (mv/groups.cuh), where unit u's is MQ_SG·u further, beside the group's others.
// Q5_0/Q5_1's high plane is grouped so too (its word of unit u: this index + MQ_SG·u).
__device__ __forceinline__ unsigned int mq_scale_row(unsigned int r, unsigned int nb) {
    return (r / MQ_SG) * MQ_SG * nb + r % MQ_SG;
}

template <unsigned int BT>
__device__ __forceinline__ MqCopies mq_copies(const MatvecArgs& a, unsigned int t0, unsigned int rows,
                                              unsigned int n0, unsigned int nb) {
    unsigned int tid = threadIdx.x;
    constexpr unsigned int halves = MQ_QB / 16u;
    MqCopies c;
    c.x = min(t0 + tid / 2u, rows - 1u) * a.k + 16u * (tid % 2u);
    c.xds = min(t0 + tid, rows - 1u) * nb;
    c.w = min(n0 + tid / halves, a.n - 1u) * nb * MQ_QB + 16u * (tid % halves);
    c.h = mq_scale_row(min(n0 + tid / MQ_HW, a.n - 1u), nb) * MQ_HB + 4u * (tid % MQ_HW);
    c.s = mq_scale_row(min(n0 + MQ_CG * tid, a.n - 1u) / MQ_CG * MQ_CG, nb);
    return c;
}

// Issue this thread's copies of unit u into stage s.
template <unsigned int BT, unsigned int G>
__device__ __forceinline__ void mq_load(const MatvecArgs& a, MqStage<BT, G>& s, const MqCopies& c, unsigned int nb,
                                        unsigned int u) {
    unsigned int tid = threadIdx.x;
    constexpr unsigned int halves = MQ_QB / 16u;
    static_assert(2u * BT <= MQ_THREADS && halves * MQ_BN <= MQ_THREADS && MQ_HW * MQ_BN <= MQ_THREADS,
                  "a thread copies at most one piece of each kind");
    if (tid < 2u * BT) {
        ptx_cp_async16(s.xq + mq_swz(tid / 2u, tid % 2u), a.q + c.x + 32u * u);
    }
    if (tid < BT) {
        ptx_cp_async4(&s.xds[tid], a.ds + c.xds + u);
    }
#pragma unroll
    for (unsigned int g = 0u; g < G; g++) {
        const unsigned char* wq = g == 0u ? a.wq : a.w2q;
        if (tid < halves * MQ_BN) {
            unsigned int dst = halves == 2u ? mq_swz(tid / 2u, tid % 2u) : 16u * tid;
            ptx_cp_async16(s.wq[g] + dst, wq + c.w + MQ_QB * u);
        }
        if constexpr (MQ_HB > 0u) {
            // The high plane follows the quant plane: n rows of nb units of MQ_QB bytes.
            if (tid < MQ_HW * MQ_BN) {
                const unsigned char* wh = wq + a.n * nb * MQ_QB;
                ptx_cp_async4(&s.wh[g][tid], wh + c.h + MQ_HB * MQ_SG * u);
            }
        }
        if (tid < MQ_BN / MQ_CG) {
            mq_copy_scales(s.ws[g] + tid * MQ_CG * MQ_SB, g == 0u ? a.ws : a.w2s, c.s, u);
        }
    }
}

// The warp's product of stage s (unit u) into acc: MT token tiles × 4 row tiles per
// weight, from token tile row tt and weight row tr of the block tile. Bit 2j + h of
// `bits`: the type's mq_row_bit of the row 2c + h of row tile j this thread scales.
template <unsigned int BT, unsigned int G, unsigned int MT>
__device__ __forceinline__ void mq_mma(const MqStage<BT, G>& s, float (*acc)[MT][4][4], unsigned int tt,
                                       unsigned int tr, unsigned int bits, unsigned int u) {
    unsigned int lane = threadIdx.x % MV_WARP;
    unsigned int g8 = lane / 4u; // the fragments' group (row of A and D, column of B)
    unsigned int c = lane % 4u;  // and thread in the group
    // A: rows lane % 16 of each 16-token tile, its half lane / 16 (ldmatrix x4: rows
    // 0-7 then 8-15 of bytes 0-15, then of bytes 16-31).
    unsigned int a[MT][4];
    float dx[MT][2]; // d of tokens g8, g8 + 8 of each tile
    float sx[MT][2]; // s
#pragma unroll
    for (unsigned int m = 0u; m < MT; m++) {
        unsigned int r = tt + 16u * m + lane % 16u;
        ptx_ldmatrix_x4(a[m], s.xq + mq_swz(r, lane / 16u));
#pragma unroll
        for (unsigned int h = 0u; h < 2u; h++) {
            unsigned int ds = s.xds[tt + 16u * m + g8 + 8u * h];
            dx[m][h] = mv_lo(ds);
            sx[m][h] = mv_s(ds);
        }
    }
#pragma unroll
    for (unsigned int g = 0u; g < G; g++) {
#pragma unroll
        for (unsigned int j = 0u; j < 4u; j++) {
            unsigned int rb = tr + 8u * j; // the tile's first row in the block tile
            uint2 bw = mq_frag(s.wq[g], s.wh[g], rb + g8, c);
            unsigned int b[2] = {bw.x, bw.y};
            // The scales of D's columns: rows 2c and 2c + 1 of the tile (the pair's
            // staged bytes, h = 0 and 1).
            const unsigned char* pair = s.ws[g] + (rb + 2u * c) * MQ_SB;
            MqScale w0 = mq_scales(pair, 0u, (bits >> (2u * j)) & 1u, u);
            MqScale w1 = mq_scales(pair, 1u, (bits >> (2u * j + 1u)) & 1u, u);
#pragma unroll
            for (unsigned int m = 0u; m < MT; m++) {
                if constexpr (MQ_HALVES) {
                    // Two m16n8k16 products, values 0-15 and 16-31, combined with their
                    // scales in the integers (|s0·Σ0 + s1·Σ1| < 2^25: I2F, no bias).
                    int lo[4] = {0, 0, 0, 0};
                    int hi[4] = {0, 0, 0, 0};
                    ptx_mma_m16n8k16_s8(lo, &a[m][0], b[0]);
                    ptx_mma_m16n8k16_s8(hi, &a[m][2], b[1]);
#pragma unroll
                    for (unsigned int e = 0u; e < 4u; e++) {
                        MqScale w = (e & 1u) ? w1 : w0;
                        int sum = w.s0 * lo[e] + w.s1 * hi[e];
                        acc[g][m][j][e] =
                            __fmaf_rn(__fmul_rn(w.a, dx[m][e / 2u]), __int2float_rn(sum), acc[g][m][j][e]);
                    }
                } else {
                    // The sums start at MQ_BIAS: read as f32, the result is 1.5·2^23 + Σq_w q_x
                    // exactly (|Σ| <= 32·128·128 < 2^22), so the conversion is one full-rate
                    // subtraction rather than a quarter-rate I2F per element.
                    int d[4] = {MQ_BIAS, MQ_BIAS, MQ_BIAS, MQ_BIAS};
                    ptx_mma_m16n8k32_s8(d, a[m], b);
                    // D: e = 0, 1 token g8, rows 2c, 2c + 1; e = 2, 3 token g8 + 8.
#pragma unroll
                    for (unsigned int e = 0u; e < 4u; e++) {
                        MqScale w = (e & 1u) ? w1 : w0;
                        unsigned int h = e / 2u;
                        float sum = __uint_as_float((unsigned int)d[e]) - MQ_BIAS_F;
                        float v = __fmaf_rn(__fmul_rn(w.a, dx[m][h]), sum, acc[g][m][j][e]);
                        if (MQ_MIN) {
                            v = __fmaf_rn(w.m, sx[m][h], v);
                        }
                        acc[g][m][j][e] = v;
                    }
                }
            }
        }
    }
}

__device__ __forceinline__ float mq_silu(float x) { return x / (1.0f + expf(-x)); }

// Output element `at` of epilogue EPI from its product v (the gate's, for the GLUs) and
// the up projection's: stored as is, added to the residual, or gated by SiLU/GELU. Shared
// with matmul_wgmma.cu, which is appended to this file's module.
template <unsigned int EPI>
__device__ __forceinline__ void mq_store(const MatvecArgs& a, unsigned long long at, float v, float up) {
    if constexpr (EPI == MV_ADD) {
        v = a.res[at] + v;
    } else if constexpr (MV_GATED(EPI)) {
        v = (EPI == MV_SWIGLU ? mq_silu(v) : gelu_f16(v)) * up;
    }
    a.out[at] = v;
}

// Grid: (ceil(rows / BT) token tiles, ceil(n / MQ_BN) row tiles, 1); block MQ_THREADS.
template <unsigned int BT, int EPI>
__device__ __forceinline__ void mq_matmul(const MatvecArgs& a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr unsigned int G = MV_GATED(EPI) ? 2u : 1u;
    constexpr unsigned int MT = BT / 32u; // 16-token tiles of a warp
    constexpr unsigned int S = MqDepth<BT, G>::stages;
    static_assert(S * sizeof(MqStage<BT, G>) <= MQ_SMEM, "the stages fit the static shared memory");
    __shared__ __align__(16) MqStage<BT, G> st[S];
    unsigned int rows = a.step[a.rows_sel];
    unsigned int t0 = blockIdx.x * BT;
    unsigned int n0 = blockIdx.y * MQ_BN;
    if (t0 >= rows || n0 >= a.n) {
        return; // uniform across the block
    }
    unsigned int nb = a.k / 32u;
    unsigned int warp = threadIdx.x / MV_WARP;
    unsigned int tt = (warp / 4u) * (BT / 2u); // the warp's first token and row in the tile
    unsigned int tr = (warp % 4u) * 32u;
    float acc[G][MT][4][4]; // (weights, token tiles, row tiles, D fragment)
#pragma unroll
    for (unsigned int g = 0u; g < G; g++) {
#pragma unroll
        for (unsigned int m = 0u; m < MT; m++) {
#pragma unroll
            for (unsigned int j = 0u; j < 4u; j++) {
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    acc[g][m][j][e] = 0.0f;
                }
            }
        }
    }
    MqCopies cp = mq_copies<BT>(a, t0, rows, n0, nb);
    unsigned int bits = 0u; // mq_mma's
#pragma unroll
    for (unsigned int i = 0u; i < 8u; i++) {
        unsigned int row = n0 + tr + 8u * (i / 2u) + 2u * (threadIdx.x % 4u) + i % 2u;
        bits |= mq_row_bit(mq_scale_row(min(row, a.n - 1u), nb)) << i;
    }
    // The pipeline: S - 1 units in flight ahead of the one multiplied. Every iteration
    // commits a group (empty past the last unit), so "unit u landed" is always "at most
    // S - 2 groups pending".
#pragma unroll
    for (unsigned int p = 0u; p + 1u < S; p++) {
        if (p < nb) {
            mq_load<BT, G>(a, st[p], cp, nb, p);
        }
        ptx_cp_async_commit();
    }
#pragma unroll 1
    for (unsigned int u = 0u; u < nb; u++) {
        mq_wait<S - 2u>();
        // Unit u is in every thread's view, and every warp is done with unit u - 1,
        // whose stage the next copies overwrite.
        __syncthreads();
        unsigned int next = u + S - 1u;
        if (next < nb) {
            mq_load<BT, G>(a, st[next % S], cp, nb, next);
        }
        ptx_cp_async_commit();
        mq_mma<BT, G, MT>(st[u % S], acc, tt, tr, bits, u);
    }
    ptx_cp_async_wait0();
    // D fragment element e of tile (m, j): token tt + 16m + lane/4 (+ 8 for e >= 2), row
    // tr + 8j + 2(lane % 4) + (e & 1).
    unsigned int lane = threadIdx.x % MV_WARP;
#pragma unroll
    for (unsigned int m = 0u; m < MT; m++) {
#pragma unroll
        for (unsigned int e = 0u; e < 4u; e++) {
            unsigned int t = t0 + tt + 16u * m + lane / 4u + 8u * (e / 2u);
            if (t >= rows) {
                continue;
            }
#pragma unroll
            for (unsigned int j = 0u; j < 4u; j++) {
                unsigned int col = n0 + tr + 8u * j + 2u * (lane % 4u) + (e & 1u);
                if (col < a.n) {
                    unsigned long long at = (unsigned long long)t * a.out_stride + col;
                    mq_store<EPI>(a, at, acc[0][m][j][e], acc[G - 1u][m][j][e]);
                }
            }
        }
    }
#else
    // cp.async and mma.sync s8 need sm_80; the host never launches this below.
    (void)a;
    ptx_trap();
#endif
}

} // namespace

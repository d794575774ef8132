// mv/matvec.cu: the decode matvec, out = epilogue(x · Wᵀ) for a tile of T tokens, from
// packed weights (src/repack.rs; a weight "block" here is a unit of 32 values, a
// K-quant's sub-block) and q8_1 activations (mv/quantize_q8_1.cu). A block of
// MV_WARPS warps computes R output rows (R weight rows, of the gate and the up weight for
// the GLUs) for the tile's tokens; its lanes split the row's 32-value blocks (split-K: lane
// s of the block takes blocks s, s + 128, ...), so each weight load is 16 bytes, a warp's
// load 512 contiguous bytes, and a lane's R (2R) loads are in flight together; the 32-value
// types' scales of the R rows' block come in one load beside them, Q5's high words in
// another (mv/groups.cuh). Each lane
// reads a token's activation block once and dots it with its R rows' blocks in
// registers; the tile's tokens share every weight block read. Integer dot products
// (dp4a) per block, then the scales; sums over lanes by butterfly, over warps through
// shared memory in warp order (the Rust twin, src/matvec/twin.rs, adds in this order).
//
// The host appends MatvecArgs' declaration before this file and one entry per variant
// after it (src/matvec.rs): matvec_<dtype>_t<T>[_add|_swiglu|_geglu] → mv_matvec<T, R, EPI>.

#include "mv/common.cuh"
#include "mv/weights.cuh"

#define MV_WARPS 4u
#define MV_THREADS 128u
// Epilogues: plain store, residual add (MatMulAdd), silu(gate)·up (MatMulSwiGlu),
// gelu(gate)·up (MatMulGeGlu).
#define MV_STORE 0
#define MV_ADD 1
#define MV_SWIGLU 2
#define MV_GEGLU 3
#define MV_GATED(EPI) ((EPI) == MV_SWIGLU || (EPI) == MV_GEGLU)

#ifndef MV_ROW_GROUPS
// Unit b of rows r0 .. r0 + R one row at a time (the K-quants: a row's super-block
// record serves 8 units; rows past n read row n - 1). The 32-value types read their
// rows' scales in one load (mv/groups.cuh) and define their own.
template <unsigned int R>
__device__ __forceinline__ void mv_load_rows(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                             unsigned int n, unsigned int r0, unsigned int nb, unsigned int b, MvW* w) {
#pragma unroll
    for (unsigned int r = 0u; r < R; r++) {
        w[r] = mv_load(wq, ws, n, min(r0 + r, n - 1u), nb, b);
    }
}
#endif

// gelu.cuh's f16 roundings through mv/common.cuh's conversions (no prelude here).
__device__ __forceinline__ float f16_to_f32(unsigned short h) { return mv_f16(h); }
__device__ __forceinline__ unsigned short f32_to_f16(float f) { return mv_to_f16(f); }

#include "gelu.cuh"

// p ? a : b through selp: a plain ?: between two array elements may become a select of
// their addresses, which puts the array in local memory.
__device__ __forceinline__ float mv_select(bool p, float a, float b) {
    return ptx_selp_f32(p, a, b);
}

// One step of the reduce-scatter below: N values held, partner lane ^ S. Templates
// make every index a constant (a runtime one would put the array in local memory).
template <unsigned int N, unsigned int S>
__device__ __forceinline__ void mv_reduce_step(float* v, unsigned int lane, unsigned int& base) {
    if constexpr (S > 0u) {
        if constexpr (N > 1u) {
            constexpr unsigned int half = N / 2u;
            bool upper = (lane & S) != 0u;
#pragma unroll
            for (unsigned int j = 0u; j < half; j++) {
                float send = mv_select(upper, v[j], v[j + half]);
                float keep = mv_select(upper, v[j + half], v[j]);
                v[j] = keep + __shfl_xor_sync(0xFFFFFFFFu, send, S);
            }
            base += upper ? half : 0u;
            mv_reduce_step<half, S / 2u>(v, lane, base);
        } else {
            v[0] += __shfl_xor_sync(0xFFFFFFFFu, v[0], S);
            mv_reduce_step<1u, S / 2u>(v, lane, base);
        }
    }
}

// The warp's sums of A accumulators (A a power of two) into out[0 .. A): a reduce-scatter
// (at each step a lane keeps half of its values and adds its partner's half: about A
// shuffles in all, not 5·A) whose sums are those of mv_warp_sum's butterfly, bit for
// bit (the same pairs are added at every step).
template <unsigned int A>
__device__ __forceinline__ void mv_reduce_to(float* v, float* out, unsigned int lane) {
    unsigned int base = 0u; // first output this lane holds
    mv_reduce_step<A, MV_WARP / 2u>(v, lane, base);
    constexpr unsigned int held = A >= MV_WARP ? A / MV_WARP : 1u;
    constexpr unsigned int copies = A >= MV_WARP ? 1u : MV_WARP / A; // lanes with each sum
    if (lane % copies == 0u) {
#pragma unroll
        for (unsigned int j = 0u; j < held; j++) {
            out[base + j] = v[j];
        }
    }
}

__device__ __forceinline__ float mv_silu(float x) { return x / (1.0f + expf(-x)); }

// Tokens t0 .. t0 + T (nt of them in the step) of rows r0 .. r0 + R.
template <unsigned int T, unsigned int R, int EPI>
__device__ __forceinline__ void mv_pass(const MatvecArgs& a, unsigned int t0, unsigned int nt,
                                        unsigned int r0, float (*part)[(MV_GATED(EPI) ? 2u : 1u) * R * T]) {
    constexpr unsigned int G = MV_GATED(EPI) ? 2u : 1u; // weights read together
    unsigned int warp = threadIdx.x / MV_WARP;
    unsigned int lane = threadIdx.x % MV_WARP;
    unsigned int nb = a.k / 32u;
    float acc[G][R][T]; // (weights, rows, tokens) this lane's partial dots
#pragma unroll
    for (unsigned int g = 0u; g < G; g++) {
#pragma unroll
        for (unsigned int r = 0u; r < R; r++) {
#pragma unroll
            for (unsigned int t = 0u; t < T; t++) {
                acc[g][r][t] = 0.0f;
            }
        }
    }
    // Not unrolled: the registers go to the rows and tokens of one block step.
#pragma unroll 1
    for (unsigned int b = threadIdx.x; b < nb; b += MV_THREADS) {
        // Every weight block first, so all G·R loads are in flight at once; rows past n
        // read row n - 1 and are not stored.
        MvW w[G][R];
#pragma unroll
        for (unsigned int g = 0u; g < G; g++) {
            mv_load_rows<R>(g == 0u ? a.wq : a.w2q, g == 0u ? a.ws : a.w2s, a.n, r0, nb, b, w[g]);
        }
        // Tokens past the step's rows repeat its last row (not stored): no branches.
        // Tokens advance by one row: 32-bit offsets, not a 64-bit address per token.
        unsigned int at = t0 * a.k + 32u * b;
        MvAct next = mv_act(a.q, a.ds, at);
#pragma unroll
        for (unsigned int t = 0u; t < T; t++) {
            MvAct x = next;
            if (t + 1u < T) {
                at += t + 1u < nt ? a.k : 0u;
                next = mv_act(a.q, a.ds, at);
            }
#pragma unroll
            for (unsigned int g = 0u; g < G; g++) {
#pragma unroll
                for (unsigned int r = 0u; r < R; r++) {
                    acc[g][r][t] = mv_dot(w[g][r], x, acc[g][r][t]);
                }
            }
        }
    }
    mv_reduce_to<G * R * T>(&acc[0][0][0], part[warp], lane);
    __syncthreads();
    // Thread i finishes output (row r0 + i / T, token t0 + i % T).
    for (unsigned int i = threadIdx.x; i < R * T; i += MV_THREADS) {
        unsigned int r = r0 + i / T;
        unsigned int t = t0 + i % T;
        if (r < a.n && i % T < nt) {
            float v = part[0][i];
#pragma unroll
            for (unsigned int wp = 1u; wp < MV_WARPS; wp++) {
                v += part[wp][i];
            }
            unsigned long long at = (unsigned long long)t * a.out_stride + r;
            if (EPI == MV_ADD) {
                v = a.res[at] + v;
            } else if (MV_GATED(EPI)) {
                float u = part[0][R * T + i];
#pragma unroll
                for (unsigned int wp = 1u; wp < MV_WARPS; wp++) {
                    u += part[wp][R * T + i];
                }
                v = (EPI == MV_SWIGLU ? mv_silu(v) : gelu_f16(v)) * u;
            }
            a.out[at] = v;
        }
    }
}

// Grid: (ceil(n / R) row groups, 1, ceil(tokens / T) token tiles); block MV_THREADS.
template <unsigned int T, unsigned int R, int EPI>
__device__ __forceinline__ void mv_matvec(const MatvecArgs& a) {
    constexpr unsigned int G = MV_GATED(EPI) ? 2u : 1u;
    __shared__ float part[MV_WARPS][G * R * T]; // (warps, G·R·T) warp sums
    unsigned int rows = a.step[a.rows_sel];
    unsigned int r0 = blockIdx.x * R;
    unsigned int t0 = blockIdx.z * T;
    unsigned int nt = min(T, rows - min(t0, rows));
    if (r0 >= a.n || nt == 0u) {
        return; // uniform across the block
    }
    mv_pass<T, R, EPI>(a, t0, nt, r0, part);
}

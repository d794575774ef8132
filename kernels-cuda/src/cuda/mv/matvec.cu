// mv/matvec.cu: the decode matvec, out = epilogue(x · Wᵀ) for a tile of T tokens, from
// packed weights (src/repack.rs) and q8_1 activations (mv/quantize_q8_1.cu). A block of
// MV_WARPS warps computes R output rows (R weight rows, of the gate and the up weight for
// SwiGLU) for the tile's tokens; its lanes split the row's 32-value blocks (split-K: lane
// s of the block takes blocks s, s + 128, ...), so each weight load is 16 bytes, a warp's
// load 512 contiguous bytes, and a lane's R (2R) loads are in flight together. Each lane
// reads a token's activation block once and dots it with its R rows' blocks in
// registers; the tile's tokens share every weight block read. Integer dot products
// (dp4a) per block, then the scales; sums over lanes by butterfly, over warps through
// shared memory in warp order (the Rust twin, src/matvec/twin.rs, adds in this order).
//
// The host appends MatvecArgs' declaration before this file and one entry per variant
// after it (src/matvec.rs): matvec_<dtype>_t<T>[_add|_swiglu] → mv_matvec<T, R, EPI>.

#include "mv/common.cuh"
#include "mv/weights.cuh"

#define MV_WARPS 4u
#define MV_THREADS 128u
// Epilogues: plain store, residual add (MatMulAdd), silu(gate)·up (MatMulSwiGlu).
#define MV_STORE 0
#define MV_ADD 1
#define MV_SWIGLU 2

__device__ __forceinline__ float mv_silu(float x) { return x / (1.0f + expf(-x)); }

// Grid: (ceil(n / R) row groups, 1, ceil(tokens / T) token tiles); block MV_THREADS.
template <unsigned int T, unsigned int R, int EPI>
__device__ __forceinline__ void mv_matvec(const MatvecArgs& a) {
    constexpr unsigned int G = EPI == MV_SWIGLU ? 2u : 1u; // weights read together
    __shared__ float part[MV_WARPS][G * R * T];            // (warps, G·R·T) warp sums
    unsigned int rows = a.step[a.rows_sel];
    unsigned int t0 = blockIdx.z * T;
    unsigned int nt = min(T, rows - min(t0, rows));
    unsigned int r0 = blockIdx.x * R;
    if (nt == 0u || r0 >= a.n) {
        return; // uniform across the block
    }
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
    for (unsigned int b = threadIdx.x; b < nb; b += MV_THREADS) {
        // Every weight block first, so all G·R loads are in flight at once; rows past n
        // read row n - 1 and are not stored.
        MvW w[G][R];
#pragma unroll
        for (unsigned int g = 0u; g < G; g++) {
#pragma unroll
            for (unsigned int r = 0u; r < R; r++) {
                unsigned int row = min(r0 + r, a.n - 1u);
                w[g][r] = g == 0u ? mv_load(a.wq, a.ws, row, nb, b) : mv_load(a.w2q, a.w2s, row, nb, b);
            }
        }
#pragma unroll
        for (unsigned int t = 0u; t < T; t++) {
            if (t < nt) {
                MvAct x = mv_act(a.q, a.ds, t0 + t, a.k, b);
#pragma unroll
                for (unsigned int g = 0u; g < G; g++) {
#pragma unroll
                    for (unsigned int r = 0u; r < R; r++) {
                        acc[g][r][t] = mv_dot(w[g][r], x, acc[g][r][t]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (unsigned int g = 0u; g < G; g++) {
#pragma unroll
        for (unsigned int r = 0u; r < R; r++) {
#pragma unroll
            for (unsigned int t = 0u; t < T; t++) {
                float v = mv_warp_sum(acc[g][r][t]);
                if (lane == 0u) {
                    part[warp][(g * R + r) * T + t] = v;
                }
            }
        }
    }
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
            } else if (EPI == MV_SWIGLU) {
                float u = part[0][R * T + i];
#pragma unroll
                for (unsigned int wp = 1u; wp < MV_WARPS; wp++) {
                    u += part[wp][R * T + i];
                }
                v = mv_silu(v) * u;
            }
            a.out[at] = v;
        }
    }
}

// mv/q5_0.cuh: the matvec's reader of packed Q5_0 (src/repack.rs): a unit is 16 quant
// bytes (low 4 bits, nibbles as Q4_0's), a word of fifth bits in the high plane (after
// the quant plane: n rows of nb units of 16 bytes) and its f16 d in the scale plane, both
// grouped (mv/groups.cuh); value (q - 16)·d.

#include "mv/dots.cuh"
#include "mv/groups.cuh"

#define MV_ROW_GROUPS 1 // mv_load_rows reads the rows' high words and scales together

struct MvW {
    uint4 q;        // the unit's low 4 bits
    unsigned int h; // its fifth bits
    float d;
};

// Unit b of rows r0 .. r0 + R of n into w (units `nb` a row): R quant loads (rows past n
// read row n - 1), one load of the R rows' high words and one of their scales (both
// planes grouped: mv/groups.cuh).
template <unsigned int R>
__device__ __forceinline__ void mv_load_rows(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                             unsigned int n, unsigned int r0, unsigned int nb, unsigned int b, MvW* w) {
    unsigned int s[(2u * R + 3u) / 4u];
    mv_group_words<R, 2u>(ws, r0, nb, b, s);
    unsigned int h[R]; // the high plane follows the quant plane (n rows of nb units)
    mv_group_words<R, 4u>(wq + 16u * n * nb, r0, nb, b, h);
#pragma unroll
    for (unsigned int r = 0u; r < R; r++) {
        // 32-bit offsets (a matrix is under 4 GiB, weights.rs): one index register a row
        // rather than a 64-bit pointer per plane and row, which at 4 rows spills.
        unsigned int i = min(r0 + r, n - 1u) * nb + b;
        w[r].q = mv_stream16(wq + 16u * i);
        w[r].h = h[r];
        w[r].d = mv_f16(mv_group_f16(s, r));
    }
}

// acc + this unit's dot: Σ(q - 16)·x = Σq·x - 16·Σx, Σx from the activation's s (as
// ggml's q5_0·q8_1).
__device__ __forceinline__ float mv_dot(const MvW& w, const MvAct& a, float acc) {
    int s = mv_dot5(w.q, w.h, a);
    float v = __fmaf_rn(mv_lo(a.ds), __int2float_rn(s), -16.0f * mv_s(a.ds));
    return __fmaf_rn(w.d, v, acc);
}

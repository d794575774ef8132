// mv/q4_0.cuh: the matvec's reader of packed Q4_0 (src/repack.rs): a block is 16 quant
// bytes (element j in the low nibble of byte j, element j + 16 in the high one; value
// (q - 8)·d) and its f16 d in the scale plane (grouped: mv/groups.cuh).

#include "mv/groups.cuh"

#define MV_ROW_GROUPS 1 // mv_load_rows reads the rows' scales together

struct MvW {
    uint4 q; // the block's 32 nibbles
    float d;
};

// Block b of rows r0 .. r0 + R of n into w (blocks `nb` a row): R quant loads (rows past
// n read row n - 1), one load of the R scales.
template <unsigned int R>
__device__ __forceinline__ void mv_load_rows(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                             unsigned int n, unsigned int r0, unsigned int nb, unsigned int b, MvW* w) {
    unsigned int s[(2u * R + 3u) / 4u];
    mv_group_words<R, 2u>(ws, r0, nb, b, s);
#pragma unroll
    for (unsigned int r = 0u; r < R; r++) {
        unsigned long long i = (unsigned long long)min(r0 + r, n - 1u) * nb + b;
        w[r].q = mv_stream16(wq + 16ull * i);
        w[r].d = mv_f16(mv_group_f16(s, r));
    }
}

// acc + this block's dot: the low nibbles meet values 0-15, the high ones 16-31, and
// Σ(q - 8)·x = Σq·x - 8·Σx takes Σx from the activation's s (llama.cpp's q4_0·q8_1).
__device__ __forceinline__ float mv_dot(const MvW& w, const MvAct& a, float acc) {
    const unsigned int m = 0x0F0F0F0Fu;
    int s = mv_dp4a(w.q.x & m, a.lo.x, 0);
    s = mv_dp4a(w.q.y & m, a.lo.y, s);
    s = mv_dp4a(w.q.z & m, a.lo.z, s);
    s = mv_dp4a(w.q.w & m, a.lo.w, s);
    s = mv_dp4a((w.q.x >> 4) & m, a.hi.x, s);
    s = mv_dp4a((w.q.y >> 4) & m, a.hi.y, s);
    s = mv_dp4a((w.q.z >> 4) & m, a.hi.z, s);
    s = mv_dp4a((w.q.w >> 4) & m, a.hi.w, s);
    float v = __fmaf_rn(mv_lo(a.ds), __int2float_rn(s), -8.0f * mv_s(a.ds));
    return __fmaf_rn(w.d, v, acc);
}

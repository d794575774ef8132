// mv/q4_1.cuh: the matvec's reader of packed Q4_1 (src/repack.rs): a block is 16 quant
// bytes (nibbles as Q4_0's; value q·d + m) and half2 (d, m) in the scale plane (grouped:
// mv/groups.cuh).

#include "mv/groups.cuh"

#define MV_ROW_GROUPS 1 // mv_load_rows reads the rows' scales together

struct MvW {
    uint4 q; // the block's 32 nibbles
    unsigned int dm; // d low half, m high half
};

// Block b of rows r0 .. r0 + R of n into w (blocks `nb` a row): R quant loads (rows past
// n read row n - 1), one load of the R scales.
template <unsigned int R>
__device__ __forceinline__ void mv_load_rows(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                             unsigned int n, unsigned int r0, unsigned int nb, unsigned int b, MvW* w) {
    unsigned int s[R];
    mv_group_words<R, 4u>(ws, r0, nb, b, s);
#pragma unroll
    for (unsigned int r = 0u; r < R; r++) {
        unsigned long long i = (unsigned long long)min(r0 + r, n - 1u) * nb + b;
        w[r].q = mv_stream16(wq + 16ull * i);
        w[r].dm = s[r];
    }
}

// acc + this block's dot: (d_w·d_x)·Σq·x + m_w·s_x, as ggml's q4_1·q8_1.
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
    acc = __fmaf_rn(__fmul_rn(mv_lo(w.dm), mv_lo(a.ds)), __int2float_rn(s), acc);
    return __fmaf_rn(mv_hi(w.dm), mv_s(a.ds), acc);
}

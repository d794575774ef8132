// mv/q4_k.cuh: the matvec's reader of packed Q4_K (src/repack.rs): a unit (one
// sub-block of 32 values) is 16 quant bytes (nibbles as Q4_0's); its super-block's
// 16-byte record in the scale plane holds f16 d, f16 dmin and the 12 bytes of 6-bit
// scales and minimums; value (d·sc)·q - dmin·m.

#include "mv/dots.cuh"

struct MvW {
    uint4 q; // the unit's 32 nibbles
    float d; // d·sc of its sub-block
    float m; // dmin·m
};

// Unit b of row `row` (units `nb` a row, a multiple of 8).
__device__ __forceinline__ MvW mv_load(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                       unsigned int n, unsigned long long row, unsigned int nb, unsigned int b) {
    // 32-bit offsets (a matrix is under 4 GiB, weights.rs): one index register a row
    // rather than a 64-bit pointer per plane and row, which at 4 rows spills.
    unsigned int i = (unsigned int)row * nb + b;
    MvW w;
    w.q = mv_stream16(wq + 16u * i);
    // The 8 lanes of a super-block's units read its record together (one 16-byte load,
    // cached).
    uint4 r = mv_load16(ws + 16u * (i / 8u));
    KScale s = k_scale6(r.y, r.z, r.w, i % 8u);
    w.d = __fmul_rn(mv_lo(r.x), (float)s.sc);
    w.m = __fmul_rn(mv_hi(r.x), (float)s.m);
    return w;
}

// acc + this unit's dot: (d_w·d_x)·Σq·x - m_w·s_x, as ggml's q4_K·q8_1.
__device__ __forceinline__ float mv_dot(const MvW& w, const MvAct& a, float acc) {
    int s = mv_dot4(w.q, a);
    acc = __fmaf_rn(__fmul_rn(w.d, mv_lo(a.ds)), __int2float_rn(s), acc);
    return __fmaf_rn(-w.m, mv_s(a.ds), acc);
}

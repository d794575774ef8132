// mv/q5_k.cuh: the matvec's reader of packed Q5_K (src/repack.rs): a unit is 16 quant
// bytes and a word of fifth bits (as Q5_0's), the super-block's record as Q4_K's; value
// (d·sc)·q - dmin·m.

#include "mv/dots.cuh"

struct MvW {
    uint4 q;        // the unit's low 4 bits
    unsigned int h; // its fifth bits
    float d;        // d·sc of its sub-block
    float m;        // dmin·m
};

// Unit b of row `row` of n (units `nb` a row, a multiple of 8).
__device__ __forceinline__ MvW mv_load(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                       unsigned int n, unsigned long long row, unsigned int nb, unsigned int b) {
    // 32-bit offsets (a matrix is under 4 GiB, weights.rs): one index register a row
    // rather than a 64-bit pointer per plane and row, which at 4 rows spills.
    unsigned int i = (unsigned int)row * nb + b;
    MvW w;
    w.q = mv_stream16(wq + 16u * i);
    w.h = __ldg(reinterpret_cast<const unsigned int*>(wq + 16u * n * nb) + i);
    uint4 r = mv_load16(ws + 16u * (i / 8u));
    KScale s = k_scale6(r.y, r.z, r.w, i % 8u);
    w.d = __fmul_rn(mv_lo(r.x), (float)s.sc);
    w.m = __fmul_rn(mv_hi(r.x), (float)s.m);
    return w;
}

// acc + this unit's dot: (d_w·d_x)·Σq·x - m_w·s_x, as ggml's q5_K·q8_1.
__device__ __forceinline__ float mv_dot(const MvW& w, const MvAct& a, float acc) {
    int s = mv_dot5(w.q, w.h, a);
    acc = __fmaf_rn(__fmul_rn(w.d, mv_lo(a.ds)), __int2float_rn(s), acc);
    return __fmaf_rn(-w.m, mv_s(a.ds), acc);
}

// mv/q5_1.cuh: the matvec's reader of packed Q5_1 (src/repack.rs): a unit is 16 quant
// bytes and a word of fifth bits (as Q5_0's) and half2 (d, m) in the scale plane; value
// q·d + m.

#include "mv/dots.cuh"

struct MvW {
    uint4 q;         // the unit's low 4 bits
    unsigned int h;  // its fifth bits
    unsigned int dm; // d low half, m high half
};

// Unit b of row `row` of n (units `nb` a row).
__device__ __forceinline__ MvW mv_load(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                       unsigned int n, unsigned long long row, unsigned int nb, unsigned int b) {
    // 32-bit offsets (a matrix is under 4 GiB, weights.rs): one index register a row
    // rather than a 64-bit pointer per plane and row, which at 4 rows spills.
    unsigned int i = (unsigned int)row * nb + b;
    MvW w;
    w.q = mv_stream16(wq + 16u * i);
    w.h = __ldg(reinterpret_cast<const unsigned int*>(wq + 16u * n * nb) + i);
    w.dm = __ldg(reinterpret_cast<const unsigned int*>(ws) + i);
    return w;
}

// acc + this unit's dot: (d_w·d_x)·Σq·x + m_w·s_x, as ggml's q5_1·q8_1.
__device__ __forceinline__ float mv_dot(const MvW& w, const MvAct& a, float acc) {
    int s = mv_dot5(w.q, w.h, a);
    acc = __fmaf_rn(__fmul_rn(mv_lo(w.dm), mv_lo(a.ds)), __int2float_rn(s), acc);
    return __fmaf_rn(mv_hi(w.dm), mv_s(a.ds), acc);
}

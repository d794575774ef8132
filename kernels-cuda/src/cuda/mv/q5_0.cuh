// mv/q5_0.cuh: the matvec's reader of packed Q5_0 (src/repack.rs): a unit is 16 quant
// bytes (low 4 bits, nibbles as Q4_0's), a word of fifth bits in the high plane (after
// the quant plane: n rows of nb units of 16 bytes) and its f16 d in the scale plane;
// value (q - 16)·d.

#include "mv/dots.cuh"

struct MvW {
    uint4 q;        // the unit's low 4 bits
    unsigned int h; // its fifth bits
    float d;
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
    w.d = mv_f16(__ldg(reinterpret_cast<const unsigned short*>(ws) + i));
    return w;
}

// acc + this unit's dot: Σ(q - 16)·x = Σq·x - 16·Σx, Σx from the activation's s (as
// ggml's q5_0·q8_1).
__device__ __forceinline__ float mv_dot(const MvW& w, const MvAct& a, float acc) {
    int s = mv_dot5(w.q, w.h, a);
    float v = __fmaf_rn(mv_lo(a.ds), __int2float_rn(s), -16.0f * mv_s(a.ds));
    return __fmaf_rn(w.d, v, acc);
}

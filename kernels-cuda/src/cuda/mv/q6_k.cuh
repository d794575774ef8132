// mv/q6_k.cuh: the matvec's reader of packed Q6_K (src/repack.rs): a unit is 16 quant
// bytes (low 4 bits) and 8 bytes of top 2 bits in the high plane (after the quant plane:
// n rows of nb units of 16 bytes); its super-block's 18-byte record in the scale plane
// holds 16 int8 scales (one per 16 values: the unit's are 2 of them) and f16 d; value
// (d·scale)·(q - 32).

#include "mv/dots.cuh"

struct MvW {
    uint4 q;  // the unit's low 4 bits
    uint2 h;  // its top 2 bits (values 0-15, 16-31)
    float d0; // d·scale of values 0-15
    float d1; // of values 16-31
};

// Unit b of row `row` of n (units `nb` a row, a multiple of 8).
__device__ __forceinline__ MvW mv_load(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                       unsigned int n, unsigned long long row, unsigned int nb, unsigned int b) {
    // 32-bit offsets (a matrix is under 4 GiB, weights.rs): one index register a row
    // rather than a 64-bit pointer per plane and row, which at 4 rows spills.
    unsigned int i = (unsigned int)row * nb + b;
    MvW w;
    w.q = mv_stream16(wq + 16u * i);
    w.h = __ldg(reinterpret_cast<const uint2*>(wq + 16u * n * nb) + i);
    const unsigned char* rec = ws + 18u * (i / 8u);
    unsigned int sc = __ldg(reinterpret_cast<const unsigned short*>(rec) + i % 8u);
    float d = mv_f16(__ldg(reinterpret_cast<const unsigned short*>(rec + 16)));
    w.d0 = __fmul_rn(d, (float)(int)(signed char)(sc & 0xFFu));
    w.d1 = __fmul_rn(d, (float)(int)(signed char)(sc >> 8));
    return w;
}

// acc + this unit's dot: d_x·(d0·Σ(q - 32)·x + d1·Σ(q - 32)·x) over its two halves, as
// ggml's q6_K·q8_1 (the bias in the integers, so s_x is not needed).
__device__ __forceinline__ float mv_dot(const MvW& w, const MvAct& a, float acc) {
    int lo = mv_dot6_lo(w.q, w.h, a);
    int hi = mv_dot6_hi(w.q, w.h, a);
    float v = __fmaf_rn(w.d0, __int2float_rn(lo), __fmul_rn(w.d1, __int2float_rn(hi)));
    return __fmaf_rn(mv_lo(a.ds), v, acc);
}

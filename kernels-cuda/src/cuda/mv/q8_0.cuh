// mv/q8_0.cuh: the matvec's reader of packed Q8_0 (src/repack.rs): a block is 32 signed
// quant bytes (value q·d, two 16-byte loads) and its f16 d in the scale plane (grouped:
// mv/groups.cuh).

#include "mv/groups.cuh"

#define MV_ROW_GROUPS 1 // mv_load_rows reads the rows' scales together

struct MvW {
    uint4 lo; // values 0-15
    uint4 hi; // values 16-31
    float d;
};

// Block b of rows r0 .. r0 + R of n into w (blocks `nb` a row): 2R quant loads (rows past
// n read row n - 1), one load of the R scales.
template <unsigned int R>
__device__ __forceinline__ void mv_load_rows(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                             unsigned int n, unsigned int r0, unsigned int nb, unsigned int b, MvW* w) {
    unsigned int s[(2u * R + 3u) / 4u];
    mv_group_words<R, 2u>(ws, r0, nb, b, s);
#pragma unroll
    for (unsigned int r = 0u; r < R; r++) {
        unsigned long long i = (unsigned long long)min(r0 + r, n - 1u) * nb + b;
        w[r].lo = mv_stream16(wq + 32ull * i);
        w[r].hi = mv_stream16(wq + 32ull * i + 16ull);
        w[r].d = mv_f16(mv_group_f16(s, r));
    }
}

// acc + this block's dot: (d_w·d_x)·Σq·x, as ggml's q8_0·q8_0.
__device__ __forceinline__ float mv_dot(const MvW& w, const MvAct& a, float acc) {
    int s = mv_dp4a(w.lo.x, a.lo.x, 0);
    s = mv_dp4a(w.lo.y, a.lo.y, s);
    s = mv_dp4a(w.lo.z, a.lo.z, s);
    s = mv_dp4a(w.lo.w, a.lo.w, s);
    s = mv_dp4a(w.hi.x, a.hi.x, s);
    s = mv_dp4a(w.hi.y, a.hi.y, s);
    s = mv_dp4a(w.hi.z, a.hi.z, s);
    s = mv_dp4a(w.hi.w, a.hi.w, s);
    return __fmaf_rn(__fmul_rn(w.d, mv_lo(a.ds)), __int2float_rn(s), acc);
}

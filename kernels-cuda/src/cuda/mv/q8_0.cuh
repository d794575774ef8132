// mv/q8_0.cuh: the matvec's reader of packed Q8_0 (src/repack.rs): a block is 32 signed
// quant bytes (value q·d, two 16-byte loads) and its f16 d in the scale plane.

struct MvW {
    uint4 lo; // values 0-15
    uint4 hi; // values 16-31
    float d;
};

// Block b of row `row` of n (blocks `nb` a row; n is for the readers with a high plane).
__device__ __forceinline__ MvW mv_load(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                       unsigned int n, unsigned long long row, unsigned int nb, unsigned int b) {
    unsigned long long i = row * nb + b;
    MvW w;
    w.lo = mv_stream16(wq + 32ull * i);
    w.hi = mv_stream16(wq + 32ull * i + 16ull);
    w.d = mv_f16(__ldg(reinterpret_cast<const unsigned short*>(ws) + i));
    return w;
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

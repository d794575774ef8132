// mv/q4_1.cuh: the matvec's reader of packed Q4_1 (src/repack.rs): a block is 16 quant
// bytes (nibbles as Q4_0's; value q·d + m) and half2 (d, m) in the scale plane.

struct MvW {
    uint4 q; // the block's 32 nibbles
    unsigned int dm; // d low half, m high half
};

// Block b of row `row` of n (blocks `nb` a row; n is for the readers with a high plane).
__device__ __forceinline__ MvW mv_load(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                       unsigned int n, unsigned long long row, unsigned int nb, unsigned int b) {
    unsigned long long i = row * nb + b;
    MvW w;
    w.q = mv_stream16(wq + 16ull * i);
    w.dm = __ldg(reinterpret_cast<const unsigned int*>(ws) + i);
    return w;
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

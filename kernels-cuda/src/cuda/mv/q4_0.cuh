// mv/q4_0.cuh: the matvec's reader of packed Q4_0 (src/repack.rs): a block is 16 quant
// bytes (element j in the low nibble of byte j, element j + 16 in the high one; value
// (q - 8)·d) and its f16 d in the scale plane.

struct MvW {
    uint4 q; // the block's 32 nibbles
    float d;
};

// Block b of row `row` of n (blocks `nb` a row; n is for the readers with a high plane).
__device__ __forceinline__ MvW mv_load(const unsigned char* __restrict__ wq, const unsigned char* __restrict__ ws,
                                       unsigned int n, unsigned long long row, unsigned int nb, unsigned int b) {
    unsigned long long i = row * nb + b;
    MvW w;
    w.q = mv_stream16(wq + 16ull * i);
    w.d = mv_f16(__ldg(reinterpret_cast<const unsigned short*>(ws) + i));
    return w;
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

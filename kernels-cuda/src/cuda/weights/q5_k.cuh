// weights/q5_k.cuh: super-blocks of 256 values in 176 bytes: Q4_K's d, dmin and scales,
// then qh[32] (bit 2c of qh[l]: the fifth bit of value 64c + l, bit 2c + 1 that of
// 64c + 32 + l), then the nibbles as in Q4_K; value = (d·sc)·q - dmin·m, q in 0..=31.
// Unit u: super-block u/32, word w = u%32 of the nibbles, as in Q4_K (q5_k.wgsl); no
// MM_TENSOR_CORES, as Q4_K.

#include "weights/k_common.cuh"

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int w = u % 32u;
    unsigned int c = 256u * (u / 32u) + 64u * (w / 8u) + 4u * (w % 8u);
    return u32x2{c, c + 32u};
}

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    unsigned int blk = row + 176u * (u / 32u);
    unsigned int wd = u % 32u;
    unsigned int dm = load_word(w, blk);
    float d = f16_lo(dm);
    float dmin = f16_hi(dm);
    unsigned int c = wd / 8u;
    ScaleMin s0 = k_scale_min(w, blk + 4u, 2u * c);
    ScaleMin s1 = k_scale_min(w, blk + 4u, 2u * c + 1u);
    unsigned int qh = load_word(w, blk + 16u + 4u * (wd % 8u));
    unsigned int q = load_word(w, blk + 48u + 4u * wd);
    // Bit 0 of each byte of qh >> s: the fifth bits of four values.
    f32x4 h_lo = lo_nibbles((qh >> (2u * c)) & 0x01010101u);
    f32x4 h_hi = lo_nibbles((qh >> (2u * c + 1u)) & 0x01010101u);
    f32x4 q_lo = add4(lo_nibbles(q), axpb4(16.0f, h_lo, 0.0f));
    f32x4 q_hi = add4(hi_nibbles(q), axpb4(16.0f, h_hi, 0.0f));
    return W8{axpb4(d * s0.sc, q_lo, -dmin * s0.m), axpb4(d * s1.sc, q_hi, -dmin * s1.m)};
}

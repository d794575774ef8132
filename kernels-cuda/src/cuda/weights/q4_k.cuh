// weights/q4_k.cuh: super-blocks of 256 values in 144 bytes: f16 d, f16 dmin, 12 bytes
// of 6-bit scales and minimums (k_scale_min), 128 bytes of nibbles in 4 chunks of 32:
// chunk c holds sub-block 2c in its low nibbles and 2c + 1 in its high ones;
// value = (d·sc)·q - dmin·m. Unit u: super-block u/32, word w = u%32 of the nibbles
// (chunk w/8): 4 values of sub-block 2c and the 4 of sub-block 2c + 1 32 columns on
// (q4_k.wgsl). A unit spans 36 columns, more than a tensor-core slice: no MM_TENSOR_CORES.

#include "weights/k_common.cuh"

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int w = u % 32u;
    unsigned int c = 256u * (u / 32u) + 64u * (w / 8u) + 4u * (w % 8u);
    return u32x2{c, c + 32u};
}

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    unsigned int blk = row + 144u * (u / 32u);
    unsigned int wd = u % 32u;
    unsigned int dm = load_word(w, blk);
    float d = f16_lo(dm);
    float dmin = f16_hi(dm);
    unsigned int j = 2u * (wd / 8u);
    ScaleMin s0 = k_scale_min(w, blk + 4u, j);
    ScaleMin s1 = k_scale_min(w, blk + 4u, j + 1u);
    unsigned int q = load_word(w, blk + 16u + 4u * wd);
    return W8{axpb4(d * s0.sc, lo_nibbles(q), -dmin * s0.m), axpb4(d * s1.sc, hi_nibbles(q), -dmin * s1.m)};
}

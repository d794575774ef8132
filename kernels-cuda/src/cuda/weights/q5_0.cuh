// weights/q5_0.cuh: blocks of 32 values in 22 bytes: f16 d, u32 qh (bit j: the fifth
// bit of element j), 16 bytes of nibbles (low nibbles elements 0-15, high 16-31);
// value = (q - 16)·d. Unit u: block u/4, word u%4 of the nibbles (q5_0.wgsl).

#include "weights/k_common.cuh"

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int c = 32u * (u / 4u) + 4u * (u % 4u);
    return u32x2{c, c + 16u};
}

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    unsigned int blk = row + 22u * (u / 4u);
    unsigned int i = u % 4u;
    float d = f16_at(w, blk);
    unsigned int qh = load_word(w, blk + 2u);
    unsigned int q = load_word(w, blk + 6u + 4u * i);
    f32x4 lo = axpb4(16.0f, bits4(qh >> (4u * i)), -16.0f);
    f32x4 hi = axpb4(16.0f, bits4(qh >> (4u * i + 16u)), -16.0f);
    return W8{axpb4(d, add4(lo_nibbles(q), lo), 0.0f), axpb4(d, add4(hi_nibbles(q), hi), 0.0f)};
}

// A block of 32 is one slice of the tensor-core matmul (matmul_mma.cu).
#define MM_TENSOR_CORES 1

// weights/q4_0.cuh: blocks of 32 values in 18 bytes: f16 d, 16 bytes of nibbles (low
// nibbles elements 0-15, high 16-31); value = (q - 8)·d. Unit u: block u/4, word u%4.
// Blocks are only 2-byte aligned: words through load_word.

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int c = 32u * (u / 4u) + 4u * (u % 4u);
    return u32x2{c, c + 16u};
}

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    unsigned int blk = row + 18u * (u / 4u);
    float d = f16_lo(load_word(w, blk));
    unsigned int q = load_word(w, blk + 2u + 4u * (u % 4u));
    f32x4 lo = lo_nibbles(q);
    f32x4 hi = hi_nibbles(q);
    return W8{f32x4{(lo.x - 8.0f) * d, (lo.y - 8.0f) * d, (lo.z - 8.0f) * d, (lo.w - 8.0f) * d},
              f32x4{(hi.x - 8.0f) * d, (hi.y - 8.0f) * d, (hi.z - 8.0f) * d, (hi.w - 8.0f) * d}};
}


// Prefill takes the tensor cores (matmul_mma.cu): dequantized values and activations
// rounded to f16 stay far within the quantized matmuls' error (the CPU backend quantizes
// the activations to 8 bits).
#define MM_TENSOR_CORES 1

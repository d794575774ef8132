// weights/q4_1.cuh: blocks of 32 values in 20 bytes: f16 d, f16 m, 16 bytes of nibbles;
// value = q·d + m. Unit u: block u/4, word u%4 (blocks are 4-byte aligned).

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int c = 32u * (u / 4u) + 4u * (u % 4u);
    return u32x2{c, c + 16u};
}

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    unsigned int blk = row + 20u * (u / 4u);
    unsigned int dm = load_word(w, blk);
    float d = f16_lo(dm);
    float m = f16_hi(dm);
    unsigned int q = load_word(w, blk + 4u + 4u * (u % 4u));
    f32x4 lo = lo_nibbles(q);
    f32x4 hi = hi_nibbles(q);
    return W8{f32x4{lo.x * d + m, lo.y * d + m, lo.z * d + m, lo.w * d + m},
              f32x4{hi.x * d + m, hi.y * d + m, hi.z * d + m, hi.w * d + m}};
}


// Prefill takes the tensor cores (matmul_mma.cu): dequantized values and activations
// rounded to f16 stay far within the quantized matmuls' error (the CPU backend quantizes
// the activations to 8 bits).
#define MM_TENSOR_CORES 1

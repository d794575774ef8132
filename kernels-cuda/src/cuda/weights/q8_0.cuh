// weights/q8_0.cuh: blocks of 32 values in 34 bytes: f16 d, 32 signed bytes; value = q·d.
// Unit u: block u/4, bytes 8·(u%4) .. +7 (blocks are 2-byte aligned: load_word).

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int c = 32u * (u / 4u) + 8u * (u % 4u);
    return u32x2{c, c + 4u};
}

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    unsigned int blk = row + 34u * (u / 4u);
    float d = f16_lo(load_word(w, blk));
    unsigned int q = blk + 2u + 8u * (u % 4u);
    f32x4 a = i8x4(load_word(w, q));
    f32x4 b = i8x4(load_word(w, q + 4u));
    return W8{f32x4{a.x * d, a.y * d, a.z * d, a.w * d}, f32x4{b.x * d, b.y * d, b.z * d, b.w * d}};
}


// Prefill takes the tensor cores (matmul_mma.cu): dequantized values and activations
// rounded to f16 stay far within the quantized matmuls' error (the CPU backend quantizes
// the activations to 8 bits).
#define MM_TENSOR_CORES 1

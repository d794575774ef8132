// weights/k_common.cuh: what the K-quant readers share (weights/common.wgsl): a byte and
// an f16 at any offset, the fifth bits of Q5 blocks, and Q4_K/Q5_K's 6-bit scales.

// The byte at any byte offset.
__device__ __forceinline__ unsigned int byte_at(const unsigned char* __restrict__ w, unsigned int byte_off) {
    return __ldg(w + byte_off);
}

// The f16 at a 2-byte aligned byte offset.
__device__ __forceinline__ float f16_at(const unsigned char* __restrict__ w, unsigned int byte_off) {
    return f16_to_f32(__ldg(reinterpret_cast<const unsigned short*>(w + byte_off)));
}

// Bits 0..3 of `b` as four floats.
__device__ __forceinline__ f32x4 bits4(unsigned int b) {
    return f32x4{(float)(b & 1u), (float)((b >> 1) & 1u), (float)((b >> 2) & 1u), (float)((b >> 3) & 1u)};
}

// Q4_K and Q5_K: sub-block j's 6-bit (scale, minimum) from the 12 packed bytes at `at`
// (ggml's get_scale_min_k4): j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in
// the nibbles of byte j + 4, with their top 2 bits in bytes j - 4 and j.
struct ScaleMin {
    float sc, m;
};

__device__ __forceinline__ ScaleMin k_scale_min(const unsigned char* __restrict__ w, unsigned int at, unsigned int j) {
    if (j < 4u) {
        return ScaleMin{(float)(byte_at(w, at + j) & 63u), (float)(byte_at(w, at + j + 4u) & 63u)};
    }
    unsigned int b = byte_at(w, at + j + 4u);
    unsigned int sc = (b & 15u) | ((byte_at(w, at + j - 4u) >> 6) << 4);
    unsigned int m = (b >> 4) | ((byte_at(w, at + j) >> 6) << 4);
    return ScaleMin{(float)sc, (float)m};
}

// a·x + b on four values.
__device__ __forceinline__ f32x4 axpb4(float a, f32x4 x, float b) {
    return f32x4{a * x.x + b, a * x.y + b, a * x.z + b, a * x.w + b};
}

__device__ __forceinline__ f32x4 add4(f32x4 a, f32x4 b) {
    return f32x4{a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w};
}

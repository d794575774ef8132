// weights/common.cuh: reading a weight (`w` its start, 16-byte aligned; `row` a byte
// offset from it; row starts may be only 2-byte aligned, as Q4_0's 18-byte blocks are). A weight "unit" is 8 values of a row: W8.lo are the values at
// columns unit_cols(u).x .. +3, W8.hi at unit_cols(u).y .. +3 (weights/common.wgsl).

struct W8 {
    f32x4 lo;
    f32x4 hi;
};

struct u32x2 {
    unsigned int x, y;
};

// The 32-bit little-endian word at any byte offset: two aligned loads and a funnel shift
// when the offset is not a multiple of 4 (the weight itself is 16-byte aligned).
__device__ __forceinline__ unsigned int load_word(const unsigned char* __restrict__ w, unsigned int byte_off) {
    const unsigned int* words = reinterpret_cast<const unsigned int*>(w);
    unsigned int i = byte_off >> 2;
    unsigned int s = (byte_off & 3u) * 8u;
    unsigned int lo = __ldg(words + i);
    if (s == 0u) {
        return lo;
    }
    return __funnelshift_r(lo, __ldg(words + i + 1u), s);
}

// 16 bytes at a 16-byte aligned byte offset, in one load.
__device__ __forceinline__ uint4 load_16(const unsigned char* __restrict__ w, unsigned int byte_off) {
    return __ldg(reinterpret_cast<const uint4*>(w + byte_off));
}

// A vector weight (norm, RoPE factors): decoded to f32 at load, value `at`.
__device__ __forceinline__ float vector_at(const float* __restrict__ v, unsigned int at) {
    return __ldg(v + at);
}

// mv/bits.cuh: the integer parts of the packed units (src/repack.rs) that more than one
// reader shares, without toolkit headers or other includes: the 5th and 6th bits of a
// quant word from the high plane, Q6_K's bias of 32, and Q4_K/Q5_K's 6-bit scales.

// Word i (0..3) of a unit with Q5's fifth bits `h`: low nibbles (values 4i .. 4i+3) and
// high nibbles (16+4i ..) each with its bit 4 set from h (bit 8c + i, bit 8c + 4 + i).
__device__ __forceinline__ unsigned int q5_lo(unsigned int q, unsigned int h, unsigned int i) {
    return (q & 0x0F0F0F0Fu) | ((h << (4u - i)) & 0x10101010u);
}
__device__ __forceinline__ unsigned int q5_hi(unsigned int q, unsigned int h, unsigned int i) {
    return ((q >> 4) & 0x0F0F0F0Fu) | ((h >> i) & 0x10101010u);
}

// Word i of a Q6_K unit, its four values q - 32 as signed bytes: the nibbles of q and
// the 2-bit pairs of `h` (h.x for values 0-15, h.y for 16-31: bits 2i, 2i+1 of byte c).
// The bias per byte without borrows: with bit 7 set every byte is at least 32.
__device__ __forceinline__ unsigned int q6_bias(unsigned int v) {
    return ((v | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
}
__device__ __forceinline__ unsigned int q6_lo(unsigned int q, unsigned int hx, unsigned int i) {
    return q6_bias((q & 0x0F0F0F0Fu) | (((hx >> (2u * i)) & 0x03030303u) << 4));
}
__device__ __forceinline__ unsigned int q6_hi(unsigned int q, unsigned int hy, unsigned int i) {
    return q6_bias(((q >> 4) & 0x0F0F0F0Fu) | (((hy >> (2u * i)) & 0x03030303u) << 4));
}

// Q4_K/Q5_K: sub-block j's 6-bit (scale, minimum) from the 12 scale bytes of its
// super-block's record as words s0 (bytes 0-3), s1 (4-7), s2 (8-11), ggml's
// get_scale_min_k4: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in the nibbles
// of byte j + 4 with their top 2 bits in the top bits of bytes j - 4 and j.
struct KScale {
    unsigned int sc, m;
};

__device__ __forceinline__ KScale k_scale6(unsigned int s0, unsigned int s1, unsigned int s2, unsigned int j) {
    unsigned int sh = 8u * (j & 3u);
    unsigned int a = (s0 >> sh) & 0xFFu;
    unsigned int b = (s1 >> sh) & 0xFFu;
    unsigned int c = (s2 >> sh) & 0xFFu;
    bool hi = j >= 4u;
    unsigned int sc = hi ? ((c & 15u) | ((a >> 6) << 4)) : (a & 63u);
    unsigned int m = hi ? ((c >> 4) | ((b >> 6) << 4)) : (b & 63u);
    return KScale{sc, m};
}

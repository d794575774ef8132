// weights/q6_k.cuh: super-blocks of 256 values in 210 bytes: ql[128] (low 4 bits),
// qh[64] (high 2 bits), 16 signed 8-bit scales (one per sub-block of 16), f16 d;
// value = (d·scale)·(q - 32), q in 0..=63. Half h (128 values) of a super-block: word
// ql[64h + 32s + l .. +3] (s = 0, 1; l = 0, 4, .. 28) holds values 128h + 32s + l .. +3
// in its low nibbles and the values 64 on in its high ones; their high bits are in
// qh[32h + l .. +3] at shifts 2s and 4 + 2s. Unit u: super-block u/32, w = u%32 picks
// (h, s, l) = (w/16, w/8 % 2, 4·(w%8)) (q6_k.wgsl). No MM_TENSOR_CORES: a unit spans
// 68 columns.

#include "weights/k_common.cuh"

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int w = u % 32u;
    unsigned int c = 256u * (u / 32u) + 128u * (w / 16u) + 32u * ((w / 8u) % 2u) + 4u * (w % 8u);
    return u32x2{c, c + 64u};
}

// The signed scale of sub-block j of the super-block at `blk`.
__device__ __forceinline__ float q6k_scale(const unsigned char* __restrict__ w, unsigned int blk, unsigned int j) {
    return (float)(signed char)byte_at(w, blk + 192u + j);
}

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    unsigned int blk = row + 210u * (u / 32u);
    unsigned int wd = u % 32u;
    unsigned int h = wd / 16u;
    unsigned int s = (wd / 8u) % 2u;
    unsigned int l = 4u * (wd % 8u);
    float d = f16_at(w, blk + 208u);
    unsigned int ql = load_word(w, blk + 64u * h + 32u * s + l);
    unsigned int qh = load_word(w, blk + 128u + 32u * h + l);
    f32x4 q_lo = add4(lo_nibbles(ql), axpb4(16.0f, lo_nibbles((qh >> (2u * s)) & 0x03030303u), -32.0f));
    f32x4 q_hi = add4(hi_nibbles(ql), axpb4(16.0f, lo_nibbles((qh >> (4u + 2u * s)) & 0x03030303u), -32.0f));
    // Sub-block of the low values; the high ones are 64 values (4 sub-blocks) on.
    unsigned int j = 8u * h + 2u * s + l / 16u;
    return W8{axpb4(d * q6k_scale(w, blk, j), q_lo, 0.0f), axpb4(d * q6k_scale(w, blk, j + 4u), q_hi, 0.0f)};
}

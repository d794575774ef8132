// mv/unit_q6_k.cuh: Q6_K's values (ggml's dequantize) over the packed layout
// (src/repack.rs), a unit as Q4_0's (see mv/unit_q4_k.cuh); see mv/unit_q4_0.cuh for
// what must come before.

#include "mv/bits.cuh"

// A packed weight: its three planes and units of 32 per row.
struct PackedW {
    const unsigned char* __restrict__ q; // (rows, nb, 16) low 4 bits
    const unsigned char* __restrict__ h; // (rows, nb, 8) top 2 bits
    const unsigned char* __restrict__ s; // (rows, nb / 8, 18) int8 scales and f16 d
    unsigned int nb;
};

// The planes of the packed (n, 32·nb) weight at w.
__device__ __forceinline__ PackedW pw_make(const unsigned char* w, unsigned int n, unsigned int nb) {
    unsigned long long q = 16ull * n * nb;
    return PackedW{w, w + q, w + ((q + 8ull * n * nb + 15ull) & ~15ull), nb};
}

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int c = 32u * (u / 4u) + 4u * (u % 4u);
    return u32x2{c, c + 16u};
}

__device__ __forceinline__ W8 pw_unit(const PackedW& w, unsigned int row, unsigned int u) {
    unsigned long long blk = (unsigned long long)row * w.nb + u / 4u;
    const unsigned char* rec = w.s + 18ull * (blk / 8u);
    float d = f16_to_f32(__ldg(reinterpret_cast<const unsigned short*>(rec + 16)));
    unsigned int sc = __ldg(reinterpret_cast<const unsigned short*>(rec) + blk % 8u);
    float d0 = d * (float)(int)(signed char)(sc & 0xFFu);
    float d1 = d * (float)(int)(signed char)(sc >> 8);
    unsigned int i = u % 4u;
    unsigned int q = __ldg(reinterpret_cast<const unsigned int*>(w.q + 16ull * blk) + i);
    uint2 h = __ldg(reinterpret_cast<const uint2*>(w.h) + blk);
    f32x4 lo = i8x4(q6_lo(q, h.x, i));
    f32x4 hi = i8x4(q6_hi(q, h.y, i));
    return W8{f32x4{lo.x * d0, lo.y * d0, lo.z * d0, lo.w * d0}, f32x4{hi.x * d1, hi.y * d1, hi.z * d1, hi.w * d1}};
}

// mv/unit_q4_0.cuh: Q4_0's w_unit over the packed layout (src/repack.rs), for
// kernels that dequantize (the embedding, embed.cu): unit u of a row is 8 values,
// W8.lo at columns unit_cols(u).x .. +3, W8.hi at unit_cols(u).y .. +3. Needs prelude.cuh
// and weights/common.cuh (f32x4, W8, u32x2, lo/hi_nibbles, f16_lo) before it.

#include "mv/groups.cuh"

// A packed weight: its two planes and blocks per row.
struct PackedW {
    const unsigned char* __restrict__ q; // (rows, nb, 16) quants
    const unsigned char* __restrict__ s; // (ceil(rows / 4), nb, 4) f16 d (mv/groups.cuh)
    unsigned int nb;
};

// The planes of the packed (n, 32·nb) weight at w.
__device__ __forceinline__ PackedW pw_make(const unsigned char* w, unsigned int n, unsigned int nb) {
    return PackedW{w, w + 16ull * n * nb, nb};
}

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int c = 32u * (u / 4u) + 4u * (u % 4u);
    return u32x2{c, c + 16u};
}

__device__ __forceinline__ W8 pw_unit(const PackedW& w, unsigned int row, unsigned int u) {
    unsigned long long blk = (unsigned long long)row * w.nb + u / 4u;
    unsigned long long si = mv_group_index<unsigned long long>(row, w.nb, u / 4u);
    float d = f16_to_f32(__ldg(reinterpret_cast<const unsigned short*>(w.s) + si));
    unsigned int q = __ldg(reinterpret_cast<const unsigned int*>(w.q + 16ull * blk) + u % 4u);
    f32x4 lo = lo_nibbles(q);
    f32x4 hi = hi_nibbles(q);
    return W8{f32x4{(lo.x - 8.0f) * d, (lo.y - 8.0f) * d, (lo.z - 8.0f) * d, (lo.w - 8.0f) * d},
              f32x4{(hi.x - 8.0f) * d, (hi.y - 8.0f) * d, (hi.z - 8.0f) * d, (hi.w - 8.0f) * d}};
}

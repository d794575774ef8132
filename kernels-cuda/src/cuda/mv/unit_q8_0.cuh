// mv/unit_q8_0.cuh: Q8_0's w_unit over the packed layout (src/repack.rs); see
// mv/unit_q4_0.cuh for what a unit is and what must come before.

#include "mv/groups.cuh"

// A packed weight: its two planes and blocks per row.
struct PackedW {
    const unsigned char* __restrict__ q; // (rows, nb, 32) quants
    const unsigned char* __restrict__ s; // (ceil(rows / 4), nb, 4) f16 d (mv/groups.cuh)
    unsigned int nb;
};

// The planes of the packed (n, 32·nb) weight at w.
__device__ __forceinline__ PackedW pw_make(const unsigned char* w, unsigned int n, unsigned int nb) {
    return PackedW{w, w + 32ull * n * nb, nb};
}

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int c = 32u * (u / 4u) + 8u * (u % 4u);
    return u32x2{c, c + 4u};
}

__device__ __forceinline__ W8 pw_unit(const PackedW& w, unsigned int row, unsigned int u) {
    unsigned long long blk = (unsigned long long)row * w.nb + u / 4u;
    unsigned long long si = mv_group_index<unsigned long long>(row, w.nb, u / 4u);
    float d = f16_to_f32(__ldg(reinterpret_cast<const unsigned short*>(w.s) + si));
    uint2 q = __ldg(reinterpret_cast<const uint2*>(w.q + 32ull * blk) + u % 4u);
    f32x4 a = i8x4(q.x);
    f32x4 b = i8x4(q.y);
    return W8{f32x4{a.x * d, a.y * d, a.z * d, a.w * d}, f32x4{b.x * d, b.y * d, b.z * d, b.w * d}};
}

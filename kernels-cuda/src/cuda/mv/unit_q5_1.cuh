// mv/unit_q5_1.cuh: Q5_1's w_unit over the packed layout (src/repack.rs);
// see mv/unit_q4_0.cuh for what a unit is and what must come before.

#include "mv/bits.cuh"
#include "mv/groups.cuh"

// A packed weight: its three planes and units per row.
struct PackedW {
    const unsigned char* __restrict__ q; // (rows, nb, 16) low 4 bits
    const unsigned char* __restrict__ h; // (ceil(rows / 4), nb, 4) words of fifth bits
    const unsigned char* __restrict__ s; // (ceil(rows / 4), nb, 4) half2 (d, m) (mv/groups.cuh)
    unsigned int nb;
};

// The planes of the packed (n, 32·nb) weight at w.
__device__ __forceinline__ PackedW pw_make(const unsigned char* w, unsigned int n, unsigned int nb) {
    unsigned long long q = 16ull * n * nb;
    unsigned long long h = 4ull * ((n + MV_SG - 1u) / MV_SG * MV_SG) * nb; // whole groups
    return PackedW{w, w + q, w + ((q + h + 15ull) & ~15ull), nb};
}

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) {
    unsigned int c = 32u * (u / 4u) + 4u * (u % 4u);
    return u32x2{c, c + 16u};
}

__device__ __forceinline__ W8 pw_unit(const PackedW& w, unsigned int row, unsigned int u) {
    unsigned long long blk = (unsigned long long)row * w.nb + u / 4u;
    unsigned long long si = mv_group_index<unsigned long long>(row, w.nb, u / 4u);
    unsigned int dm = __ldg(reinterpret_cast<const unsigned int*>(w.s) + si);
    float d = f16_lo(dm);
    float m = f16_hi(dm);
    unsigned int i = u % 4u;
    unsigned int q = __ldg(reinterpret_cast<const unsigned int*>(w.q + 16ull * blk) + i);
    unsigned int h = __ldg(reinterpret_cast<const unsigned int*>(w.h) + si);
    f32x4 lo = i8x4(q5_lo(q, h, i));
    f32x4 hi = i8x4(q5_hi(q, h, i));
    return W8{f32x4{lo.x * d + m, lo.y * d + m, lo.z * d + m, lo.w * d + m},
              f32x4{hi.x * d + m, hi.y * d + m, hi.z * d + m, hi.w * d + m}};
}

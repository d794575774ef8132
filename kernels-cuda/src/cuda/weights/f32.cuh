// weights/f32.cuh: plain f32 rows. Unit u: columns 8u .. 8u+7, two 16-byte loads (rows
// of a multiple of 8 columns start 16-byte aligned).

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) { return u32x2{8u * u, 8u * u + 4u}; }

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    uint4 a = load_16(w, row + 32u * u);
    uint4 b = load_16(w, row + 32u * u + 16u);
    return W8{f32x4{bits_f32(a.x), bits_f32(a.y), bits_f32(a.z), bits_f32(a.w)},
              f32x4{bits_f32(b.x), bits_f32(b.y), bits_f32(b.z), bits_f32(b.w)}};
}

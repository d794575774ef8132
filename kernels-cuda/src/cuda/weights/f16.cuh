// weights/f16.cuh: IEEE half rows (converted to f32 exactly; the arithmetic is f32).
// Unit u: columns 8u .. 8u+7, one 16-byte load (rows of 8k columns are 16-byte aligned).

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) { return u32x2{8u * u, 8u * u + 4u}; }

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    uint4 q = load_16(w, row + 16u * u);
    return W8{f32x4{f16_lo(q.x), f16_hi(q.x), f16_lo(q.y), f16_hi(q.y)},
              f32x4{f16_lo(q.z), f16_hi(q.z), f16_lo(q.w), f16_hi(q.w)}};
}

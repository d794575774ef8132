// weights/bf16.cuh: bfloat16 rows (the high half of an f32). Unit u: columns 8u .. 8u+7,
// one 16-byte load.

__device__ __forceinline__ u32x2 unit_cols(unsigned int u) { return u32x2{8u * u, 8u * u + 4u}; }

__device__ __forceinline__ W8 w_unit(const unsigned char* __restrict__ w, unsigned int row, unsigned int u) {
    uint4 q = load_16(w, row + 16u * u);
    return W8{f32x4{bf16_lo(q.x), bf16_hi(q.x), bf16_lo(q.y), bf16_hi(q.y)},
              f32x4{bf16_lo(q.z), bf16_hi(q.z), bf16_lo(q.w), bf16_hi(q.w)}};
}

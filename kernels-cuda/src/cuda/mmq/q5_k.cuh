// mmq/q5_k.cuh: packed Q5_K (src/repack.rs) for matmul_mmq.cu: a unit is 16 quant bytes
// (the low 4 bits) and a word of fifth bits in the high plane (mv/bits.cuh: q5_lo,
// q5_hi), its super-block's record as Q4_K's; value (d·sc)·q - dmin·m.

#define MQ_QB 16u
#define MQ_HB 4u
#define MQ_HW 1u
#define MQ_SB 16u
#define MQ_MIN 1
#define MQ_HALVES 0
#define MQ_SG 1u // a record a row and super-block: no groups
#define MQ_CG 1u // rows a scale copy brings

__device__ __forceinline__ void mq_copy_scales(unsigned char* dst, const unsigned char* ws, unsigned int rnb,
                                               unsigned int u) {
    ptx_cp_async16(dst, ws + 16u * ((rnb + u) / 8u));
}

// The B fragment of row r: values 4c .. 4c+3 and 16+4c .. with their fifth bits, unsigned.
__device__ __forceinline__ uint2 mq_frag(const unsigned char* wq, const unsigned int* wh, unsigned int r,
                                         unsigned int c) {
    unsigned int q = reinterpret_cast<const unsigned int*>(wq + 16u * r)[c];
    unsigned int h = wh[r];
    return uint2{q5_lo(q, h, c), q5_hi(q, h, c)};
}

__device__ __forceinline__ unsigned int mq_row_bit(unsigned int rnb) {
    (void)rnb;
    return 0u;
}

__device__ __forceinline__ MqScale mq_scales(const unsigned char* staged, unsigned int h, unsigned int bit,
                                             unsigned int u) {
    const unsigned char* s = staged + h * MQ_SB;
    (void)bit;
    uint4 r = *reinterpret_cast<const uint4*>(s);
    KScale k = k_scale6(r.y, r.z, r.w, u % 8u);
    return MqScale{__fmul_rn(mv_lo(r.x), (float)k.sc), -__fmul_rn(mv_hi(r.x), (float)k.m), 0, 0};
}

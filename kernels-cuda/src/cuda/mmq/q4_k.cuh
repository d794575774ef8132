// mmq/q4_k.cuh: packed Q4_K (src/repack.rs) for matmul_mmq.cu: a unit (one sub-block of
// 32 values) is 16 quant bytes (nibbles as Q4_0's); its super-block's 16-byte record in
// the scale plane holds f16 d, f16 dmin and the 12 bytes of 6-bit scales and minimums
// (mv/bits.cuh: k_scale6); value (d·sc)·q - dmin·m.

#define MQ_QB 16u
#define MQ_HB 0u
#define MQ_HW 1u
#define MQ_SB 16u // the super-block's record
#define MQ_MIN 1
#define MQ_HALVES 0
#define MQ_SG 1u // a record a row and super-block: no groups
#define MQ_CG 1u // rows a scale copy brings

// The record of unit r·nb + u's super-block (nb is a multiple of 8).
__device__ __forceinline__ void mq_copy_scales(unsigned char* dst, const unsigned char* ws, unsigned int rnb,
                                               unsigned int u) {
    ptx_cp_async16(dst, ws + 16u * ((rnb + u) / 8u));
}

// The B fragment of row r: word c's low nibbles and high ones, as unsigned bytes.
__device__ __forceinline__ uint2 mq_frag(const unsigned char* wq, const unsigned int* wh, unsigned int r,
                                         unsigned int c) {
    (void)wh;
    unsigned int q = reinterpret_cast<const unsigned int*>(wq + 16u * r)[c];
    return uint2{q & 0x0F0F0F0Fu, (q >> 4) & 0x0F0F0F0Fu};
}

// Sub-block u % 8 of the staged record s: (d·sc, -dmin·m).
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

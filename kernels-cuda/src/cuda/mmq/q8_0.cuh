// mmq/q8_0.cuh: packed Q8_0 (src/repack.rs) for matmul_mmq.cu: 32 signed quant bytes a
// unit (a 32-byte shared row, its halves swizzled: mq_swz), f16 d in the scale plane;
// value q·d.

#define MQ_QB 32u
#define MQ_HB 0u
#define MQ_HW 1u
#define MQ_SB 4u
#define MQ_MIN 0
#define MQ_HALVES 0 // one scale a unit

// The aligned word of the scale plane that holds unit r·nb + u's d (cp.async copies 4
// bytes at least; d is its half (r·nb + u) % 2).
__device__ __forceinline__ void mq_copy_scales(unsigned char* dst, const unsigned char* ws, unsigned int rnb,
                                               unsigned int u) {
    ptx_cp_async4(dst, ws + 4u * ((rnb + u) / 2u));
}

// The B fragment of row r: bytes 4c .. 4c+3 and 16+4c .. 16+4c+3.
__device__ __forceinline__ uint2 mq_frag(const unsigned char* wq, const unsigned int* wh, unsigned int r,
                                         unsigned int c) {
    (void)wh;
    const unsigned int* lo = reinterpret_cast<const unsigned int*>(wq + mq_swz(r, 0u));
    const unsigned int* hi = reinterpret_cast<const unsigned int*>(wq + mq_swz(r, 1u));
    return uint2{lo[c], hi[c]};
}

// What mq_scales needs of row r besides u: the parity of r·nb.
__device__ __forceinline__ unsigned int mq_row_bit(unsigned int rnb) { return rnb & 1u; }

// The staged scale bytes s of a row: d is the half (r·nb + u) % 2 of the word.
__device__ __forceinline__ MqScale mq_scales(const unsigned char* s, unsigned int bit, unsigned int u) {
    unsigned int w = *reinterpret_cast<const unsigned int*>(s);
    return MqScale{((bit ^ u) & 1u) ? mv_hi(w) : mv_lo(w), 0.0f, 0, 0};
}

// mmq/q5_0.cuh: packed Q5_0 (src/repack.rs) for matmul_mmq.cu: 16 quant bytes a unit (the
// low 4 bits, nibbles as Q4_0's), a word of fifth bits in the high plane (mv/bits.cuh:
// q5_lo, q5_hi), f16 d in the scale plane; value (q - 16)·d, the 16 taken off in the bytes.

#define MQ_QB 16u // quant bytes of a unit
#define MQ_HB 4u  // high-plane bytes of a unit
#define MQ_HW 1u  // words of them a stage keeps
#define MQ_SB 4u  // scale bytes a stage keeps per row
#define MQ_MIN 0  // no offset term
#define MQ_HALVES 0 // one scale a unit

// The aligned word of the scale plane that holds unit r·nb + u's d (its half
// (r·nb + u) % 2).
__device__ __forceinline__ void mq_copy_scales(unsigned char* dst, const unsigned char* ws, unsigned int rnb,
                                               unsigned int u) {
    ptx_cp_async4(dst, ws + 4u * ((rnb + u) / 2u));
}

// Four 5-bit values less 16 as signed bytes (bit 7 set first, so no byte borrows).
__device__ __forceinline__ unsigned int mq_less16(unsigned int v) {
    return ((v | 0x80808080u) - 0x10101010u) ^ 0x80808080u;
}

// The B fragment of row r: values 4c .. 4c+3 and 16+4c .. 16+4c+3 with their fifth bits.
__device__ __forceinline__ uint2 mq_frag(const unsigned char* wq, const unsigned int* wh, unsigned int r,
                                         unsigned int c) {
    unsigned int q = reinterpret_cast<const unsigned int*>(wq + 16u * r)[c];
    unsigned int h = wh[r];
    return uint2{mq_less16(q5_lo(q, h, c)), mq_less16(q5_hi(q, h, c))};
}

// What mq_scales needs of row r besides u: the parity of r·nb.
__device__ __forceinline__ unsigned int mq_row_bit(unsigned int rnb) { return rnb & 1u; }

// The staged scale bytes s of a row: d is the half (r·nb + u) % 2 of the word.
__device__ __forceinline__ MqScale mq_scales(const unsigned char* s, unsigned int bit, unsigned int u) {
    unsigned int w = *reinterpret_cast<const unsigned int*>(s);
    return MqScale{((bit ^ u) & 1u) ? mv_hi(w) : mv_lo(w), 0.0f, 0, 0};
}

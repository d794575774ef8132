// mmq/q5_0.cuh: packed Q5_0 (src/repack.rs) for matmul_mmq.cu: 16 quant bytes a unit (the
// low 4 bits, nibbles as Q4_0's), a word of fifth bits in the high plane (mv/bits.cuh:
// q5_lo, q5_hi), f16 d in the scale plane; value (q - 16)·d, the 16 taken off in the bytes.

#include "mv/groups.cuh"

#define MQ_QB 16u // quant bytes of a unit
#define MQ_HB 4u  // high-plane bytes of a unit
#define MQ_HW 1u  // words of them a stage keeps
#define MQ_SB 4u  // scale bytes a stage keeps per row
#define MQ_MIN 0  // no offset term
#define MQ_HALVES 0 // one scale a unit
#define MQ_SG MV_SG  // rows of a scale group (mv/groups.cuh)
#define MQ_CG 1u     // rows a scale copy brings

// The aligned word of the scale plane that holds the d of unit u of the row whose unit 0
// is record s (mq_scale_row; mv/groups.cuh: unit u is record s + MQ_SG·u, in half s % 2
// of its word, the row's parity, as MQ_SG is even; cp.async copies 4 bytes at least).
__device__ __forceinline__ void mq_copy_scales(unsigned char* dst, const unsigned char* ws, unsigned int s,
                                               unsigned int u) {
    ptx_cp_async4(dst, ws + (2u * (s & ~1u) + 2u * MQ_SG * u));
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

__device__ __forceinline__ unsigned int mq_row_bit(unsigned int s) {
    (void)s;
    return 0u;
}

// The d of row h of a staged pair of rows (an even row, then an odd one): half h of the
// row's word, read as its f16 (Q4_0 and Q8_0 select the half by mq_row_bit instead: at
// 128 registers, the t128 kernels of one or the other spill with either form).
__device__ __forceinline__ MqScale mq_scales(const unsigned char* staged, unsigned int h, unsigned int bit,
                                             unsigned int u) {
    (void)bit;
    (void)u;
    return MqScale{mv_f16(*reinterpret_cast<const unsigned short*>(staged + h * (MQ_SB + 2u))), 0.0f, 0, 0};
}

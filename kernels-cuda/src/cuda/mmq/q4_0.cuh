// mmq/q4_0.cuh: packed Q4_0 (src/repack.rs) for matmul_mmq.cu: 16 quant bytes a unit
// (value 4i + e in the low nibble of byte 4i + e, 16 + 4i + e in its high nibble), f16 d
// in the scale plane; value (q - 8)·d, the 8 taken off in the bytes.

#include "mv/groups.cuh"

#define MQ_QB 16u // quant bytes of a unit
#define MQ_HB 0u  // high-plane bytes of a unit
#define MQ_HW 1u  // words of them a stage keeps (one unused where there are none)
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

// Four nibbles less 8 as signed bytes (bit 7 set first, so no byte borrows).
__device__ __forceinline__ unsigned int mq_less8(unsigned int v) {
    return ((v | 0x80808080u) - 0x08080808u) ^ 0x80808080u;
}

// The B fragment of row r: word c's low nibbles (values 4c .. 4c+3) and high ones (16+4c ..).
__device__ __forceinline__ uint2 mq_frag(const unsigned char* wq, const unsigned int* wh, unsigned int r,
                                         unsigned int c) {
    (void)wh;
    unsigned int q = reinterpret_cast<const unsigned int*>(wq + 16u * r)[c];
    return uint2{mq_less8(q & 0x0F0F0F0Fu), mq_less8((q >> 4) & 0x0F0F0F0Fu)};
}

// What mq_scales needs of a row: the half of its staged word that holds its d, the
// parity of its record s (the row's parity, the same for every unit).
__device__ __forceinline__ unsigned int mq_row_bit(unsigned int s) { return s & 1u; }

// The d of row h of a staged pair of rows (an even row, then an odd one): the half
// `bit` (the row's parity, so h for the rows that are stored) of the row's word.
__device__ __forceinline__ MqScale mq_scales(const unsigned char* staged, unsigned int h, unsigned int bit,
                                             unsigned int u) {
    (void)u;
    unsigned int w = *reinterpret_cast<const unsigned int*>(staged + h * MQ_SB);
    return MqScale{bit ? mv_hi(w) : mv_lo(w), 0.0f, 0, 0};
}

// mmq/q8_0.cuh: packed Q8_0 (src/repack.rs) for matmul_mmq.cu: 32 signed quant bytes a
// unit (a 32-byte shared row, its halves swizzled: mq_swz), f16 d in the scale plane;
// value q·d.

#include "mv/groups.cuh"

#define MQ_QB 32u
#define MQ_HB 0u
#define MQ_HW 1u
#define MQ_SB 4u  // scale bytes a stage keeps per row
#define MQ_MIN 0
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

// The B fragment of row r: bytes 4c .. 4c+3 and 16+4c .. 16+4c+3.
__device__ __forceinline__ uint2 mq_frag(const unsigned char* wq, const unsigned int* wh, unsigned int r,
                                         unsigned int c) {
    (void)wh;
    const unsigned int* lo = reinterpret_cast<const unsigned int*>(wq + mq_swz(r, 0u));
    const unsigned int* hi = reinterpret_cast<const unsigned int*>(wq + mq_swz(r, 1u));
    return uint2{lo[c], hi[c]};
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

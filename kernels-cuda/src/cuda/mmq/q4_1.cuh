// mmq/q4_1.cuh: packed Q4_1 (src/repack.rs) for matmul_mmq.cu: 16 quant bytes a unit
// (nibbles as Q4_0's), half2 (d, m) in the scale plane; value q·d + m, so a unit adds
// d·d_x·Σq·q_x + m·s_x.

#include "mv/groups.cuh"

#define MQ_QB 16u
#define MQ_HB 0u
#define MQ_HW 1u
#define MQ_SB 4u
#define MQ_MIN 1
#define MQ_HALVES 0
#define MQ_SG MV_SG  // rows of a scale group (mv/groups.cuh)
#define MQ_CG MV_SG  // rows a scale copy brings: a group's

// The half2 (d, m) of unit u of the MQ_SG rows whose group starts at record s
// (mq_scale_row; mv/groups.cuh), 16 bytes side by side: row r's at byte 4r of the stage.
__device__ __forceinline__ void mq_copy_scales(unsigned char* dst, const unsigned char* ws, unsigned int s,
                                               unsigned int u) {
    ptx_cp_async16(dst, ws + 4u * (s + MQ_SG * u));
}

// The B fragment of row r: word c's low nibbles and high ones, as unsigned bytes.
__device__ __forceinline__ uint2 mq_frag(const unsigned char* wq, const unsigned int* wh, unsigned int r,
                                         unsigned int c) {
    (void)wh;
    unsigned int q = reinterpret_cast<const unsigned int*>(wq + 16u * r)[c];
    return uint2{q & 0x0F0F0F0Fu, (q >> 4) & 0x0F0F0F0Fu};
}

__device__ __forceinline__ unsigned int mq_row_bit(unsigned int rnb) {
    (void)rnb;
    return 0u;
}

__device__ __forceinline__ MqScale mq_scales(const unsigned char* staged, unsigned int h, unsigned int bit,
                                             unsigned int u) {
    const unsigned char* s = staged + h * MQ_SB;
    (void)bit;
    (void)u;
    unsigned int dm = *reinterpret_cast<const unsigned int*>(s);
    return MqScale{mv_lo(dm), mv_hi(dm), 0, 0};
}

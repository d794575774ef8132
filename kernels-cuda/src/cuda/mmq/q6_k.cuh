// mmq/q6_k.cuh: packed Q6_K (src/repack.rs) for matmul_mmq.cu: a unit is 16 quant bytes
// (the low 4 bits) and 8 bytes of top 2 bits in the high plane (mv/bits.cuh: q6_lo for
// values 0-15 from the first word, q6_hi for 16-31 from the second), its super-block's
// 18-byte record in the scale plane holds 16 int8 scales (one per 16 values: the unit's
// are bytes 2j and 2j + 1, j = u % 8) and f16 d; value (d·scale)·(q - 32), the 32 taken
// off in the bytes. A scale per 16 values: two m16n8k16 products a unit (MQ_HALVES).

#define MQ_QB 16u
#define MQ_HB 8u
#define MQ_HW 2u
#define MQ_SB 8u // the aligned words that hold the unit's two scales and d
#define MQ_MIN 0
#define MQ_HALVES 1
#define MQ_SG 1u // a record a row and super-block: no groups
#define MQ_CG 1u // rows a scale copy brings

// Records are 18 bytes, so only 2-byte aligned: the aligned word holding the unit's pair
// of scales (at 18·sb + 2j), and the one holding d (at 18·sb + 16); either sits at byte
// 0 or 2 of its word, as the parity of sb + j (of sb) says.
__device__ __forceinline__ void mq_copy_scales(unsigned char* dst, const unsigned char* ws, unsigned int rnb,
                                               unsigned int u) {
    unsigned int sb = (rnb + u) / 8u;
    unsigned int pair = 18u * sb + 2u * (u % 8u);
    ptx_cp_async4(dst, ws + (pair & ~3u));
    ptx_cp_async4(dst + 4, ws + ((18u * sb + 16u) & ~3u));
}

// The parity of r·nb / 8 (sb's is this one's with u / 8's).
__device__ __forceinline__ unsigned int mq_row_bit(unsigned int rnb) { return (rnb / 8u) & 1u; }

// The B fragment of row r: values 4c .. 4c+3 and 16+4c .. less 32, as signed bytes.
__device__ __forceinline__ uint2 mq_frag(const unsigned char* wq, const unsigned int* wh, unsigned int r,
                                         unsigned int c) {
    unsigned int q = reinterpret_cast<const unsigned int*>(wq + 16u * r)[c];
    return uint2{q6_lo(q, wh[2u * r], c), q6_hi(q, wh[2u * r + 1u], c)};
}

// (d, 0, scale of values 0-15, scale of 16-31) from the staged words s.
__device__ __forceinline__ MqScale mq_scales(const unsigned char* staged, unsigned int h, unsigned int bit,
                                             unsigned int u) {
    const unsigned char* s = staged + h * MQ_SB;
    const unsigned int* w = reinterpret_cast<const unsigned int*>(s);
    unsigned int sb_odd = (bit ^ (u / 8u)) & 1u;
    unsigned int pair = w[0] >> (16u * ((sb_odd + u) & 1u));
    float d = sb_odd ? mv_hi(w[1]) : mv_lo(w[1]);
    return MqScale{d, 0.0f, (int)(signed char)(pair & 0xFFu), (int)(signed char)((pair >> 8) & 0xFFu)};
}

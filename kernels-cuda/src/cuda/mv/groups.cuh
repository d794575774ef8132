// mv/groups.cuh: where the scale plane of the 32-value types (Q4_0, Q4_1, Q8_0, Q5_0,
// Q5_1; src/repack.rs) and the high plane of Q5_0/Q5_1 keep a unit's record: rows in
// groups of MV_SG, a group's records of one unit side by side, (ceil(rows / MV_SG), units,
// MV_SG) records. A decode matvec block's 1, 2 or 4 rows (from a multiple of their count)
// take their scales (high words) of a unit in one load; the rows past the last one are
// zero records.

#define MV_SG 4u

// The record index of unit b of row `row` (units `nb` a row); I is the index type
// (32 bits in the matvec, 64 in the embedding).
template <typename I>
__device__ __forceinline__ I mv_group_index(I row, I nb, I b) {
    return ((row / MV_SG) * nb + b) * MV_SG + row % MV_SG;
}

// The S-byte records (S = 2 or 4) of rows r0 .. r0 + R of unit b (R = 1, 2 or 4, r0 a
// multiple of R) in one load of R·S bytes, as words: an f16 record r is half r % 2 of
// s[r / 2], a 4-byte one s[r].
template <unsigned int R, unsigned int S>
__device__ __forceinline__ void mv_group_words(const unsigned char* __restrict__ plane, unsigned int r0,
                                               unsigned int nb, unsigned int b, unsigned int* s) {
    static_assert(MV_SG % R == 0u && (S == 2u || S == 4u), "a group holds the rows; f16 or half2 records");
    const unsigned char* p = plane + S * mv_group_index(r0, nb, b);
    if constexpr (R * S == 16u) {
        uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
        s[0] = v.x;
        s[1] = v.y;
        s[2] = v.z;
        s[3] = v.w;
    } else if constexpr (R * S == 8u) {
        uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
        s[0] = v.x;
        s[1] = v.y;
    } else if constexpr (R * S == 4u) {
        s[0] = __ldg(reinterpret_cast<const unsigned int*>(p));
    } else {
        s[0] = __ldg(reinterpret_cast<const unsigned short*>(p));
    }
}

// Row r's f16 record among words s of mv_group_words<R, 2>. A template (W: the words'
// type) so that a module which includes it without calling it gets no unused-function
// warning (the int8 GEMM's, which reads the planes by cp.async).
template <typename W>
__device__ __forceinline__ unsigned short mv_group_f16(const W* s, unsigned int r) {
    return (unsigned short)(s[r / 2u] >> (16u * (r % 2u)));
}

// mv/dots.cuh: the integer dot of a packed unit (src/repack.rs) with a q8_1 activation
// block, for units of 4, 5 and 6 bits (word i of the quant plane meets the activation's
// lo word i, its high nibbles the hi word i).

#include "mv/common.cuh"
#include "mv/bits.cuh"

// Σ q·x of 32 unsigned nibbles.
__device__ __forceinline__ int mv_dot4(const uint4& q, const MvAct& a) {
    const unsigned int m = 0x0F0F0F0Fu;
    int s = mv_dp4a(q.x & m, a.lo.x, 0);
    s = mv_dp4a(q.y & m, a.lo.y, s);
    s = mv_dp4a(q.z & m, a.lo.z, s);
    s = mv_dp4a(q.w & m, a.lo.w, s);
    s = mv_dp4a((q.x >> 4) & m, a.hi.x, s);
    s = mv_dp4a((q.y >> 4) & m, a.hi.y, s);
    s = mv_dp4a((q.z >> 4) & m, a.hi.z, s);
    return mv_dp4a((q.w >> 4) & m, a.hi.w, s);
}

// Σ q·x of 32 unsigned 5-bit values: nibbles q, fifth bits h.
__device__ __forceinline__ int mv_dot5(const uint4& q, unsigned int h, const MvAct& a) {
    int s = mv_dp4a(q5_lo(q.x, h, 0u), a.lo.x, 0);
    s = mv_dp4a(q5_lo(q.y, h, 1u), a.lo.y, s);
    s = mv_dp4a(q5_lo(q.z, h, 2u), a.lo.z, s);
    s = mv_dp4a(q5_lo(q.w, h, 3u), a.lo.w, s);
    s = mv_dp4a(q5_hi(q.x, h, 0u), a.hi.x, s);
    s = mv_dp4a(q5_hi(q.y, h, 1u), a.hi.y, s);
    s = mv_dp4a(q5_hi(q.z, h, 2u), a.hi.z, s);
    return mv_dp4a(q5_hi(q.w, h, 3u), a.hi.w, s);
}

// Σ (q - 32)·x of Q6_K's values 0-15 (lo) and 16-31 (hi), which have scales of their own.
__device__ __forceinline__ int mv_dot6_lo(const uint4& q, const uint2& h, const MvAct& a) {
    int s = mv_dp4a(q6_lo(q.x, h.x, 0u), a.lo.x, 0);
    s = mv_dp4a(q6_lo(q.y, h.x, 1u), a.lo.y, s);
    s = mv_dp4a(q6_lo(q.z, h.x, 2u), a.lo.z, s);
    return mv_dp4a(q6_lo(q.w, h.x, 3u), a.lo.w, s);
}
__device__ __forceinline__ int mv_dot6_hi(const uint4& q, const uint2& h, const MvAct& a) {
    int s = mv_dp4a(q6_hi(q.x, h.y, 0u), a.hi.x, 0);
    s = mv_dp4a(q6_hi(q.y, h.y, 1u), a.hi.y, s);
    s = mv_dp4a(q6_hi(q.z, h.y, 2u), a.hi.z, s);
    return mv_dp4a(q6_hi(q.w, h.y, 3u), a.hi.w, s);
}

// mv/common.cuh: what the decode matvec and the activation quantizer share, without
// toolkit headers: f16 conversions, the loads (weights streamed past L1, activations
// cached), the integer dot product and the warp sums. The arithmetic is explicit
// (__fmaf_rn, __fmul_rn) so that the Rust twin (src/matvec/twin.rs) can do the same
// operations in the same order.

#define MV_WARP 32u

#include "ptx.cuh"

// IEEE half to f32 (exact), f32 to half (round to nearest even).
__device__ __forceinline__ float mv_f16(unsigned short h) { return ptx_f16_to_f32(h); }
__device__ __forceinline__ unsigned short mv_to_f16(float f) { return ptx_f32_to_f16(f); }
__device__ __forceinline__ float mv_lo(unsigned int w) { return mv_f16((unsigned short)(w & 0xFFFFu)); }
__device__ __forceinline__ float mv_hi(unsigned int w) { return mv_f16((unsigned short)(w >> 16)); }

// A q8_1 activation block's s = d·Σq, from its word: f16 d in the low half, the int16 Σq
// in the high one (|Σq| <= 32·128), multiplied in f32 here. An f16 s (ggml's half2) is
// infinite past 65504, from activations of about 2048 on: the outlier features of large
// models' residual streams reach that.
__device__ __forceinline__ float mv_s(unsigned int ds) {
    return __fmul_rn(mv_lo(ds), (float)(short)(unsigned short)(ds >> 16));
}

// 16 weight bytes at a 16-byte aligned address, read once: not kept in L1, where the
// activations that every row reuses live.
__device__ __forceinline__ uint4 mv_stream16(const unsigned char* p) { return ptx_ld_nc_no_allocate_v4(p); }

// Σ a_i · b_i over the four signed bytes of each word, plus c (IDP.4A). Volatile, as
// the activation loads are: the compiler keeps them in the order written, so it cannot
// hoist every token's loads of a tile above the dot products (at 16 and 32 tokens that
// spills); the tile loop prefetches one token ahead instead.
__device__ __forceinline__ int mv_dp4a(unsigned int a, unsigned int b, int c) { return ptx_dp4a(a, b, c); }

// 16 activation bytes (cached: every row of the block reads them).
__device__ __forceinline__ uint4 mv_load16(const void* p) { return ptx_ld_nc_v4(p); }

__device__ __forceinline__ unsigned int mv_load4(const unsigned int* p) { return ptx_ld_nc_u32(p); }

// The butterfly sum: every lane gets the same value (the twin adds in this order).
__device__ __forceinline__ float mv_warp_sum(float v) {
#pragma unroll
    for (unsigned int s = MV_WARP / 2u; s > 0u; s /= 2u) {
        v += __shfl_xor_sync(0xFFFFFFFFu, v, s);
    }
    return v;
}

// One token's activations of block b: 32 int8 quants (two 16-byte loads) and its q8_1
// word (f16 d, int16 Σq: mv_s).
struct MvAct {
    uint4 lo;       // values 0-15 of the block
    uint4 hi;       // values 16-31
    unsigned int ds; // f16 d low half, int16 Σq high half
};

// The block whose first quant is at byte `at` of the quant plane (`at` / 32 its (d, s)).
__device__ __forceinline__ MvAct mv_act(const signed char* __restrict__ q, const unsigned int* __restrict__ ds,
                                        unsigned int at) {
    const uint4* p = reinterpret_cast<const uint4*>(q + at);
    MvAct a;
    a.lo = mv_load16(p);
    a.hi = mv_load16(p + 1);
    a.ds = mv_load4(ds + at / 32u);
    return a;
}

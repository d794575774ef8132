// rmsnorm_matmul.cu: RMSNorm folded into the matmul it feeds: each block computes the
// 1/rms of its tokens, and the normed input is never stored.
// Grid and math as rmsnorm_matmul.wgsl; the matrix-vector core (matmul_core.cuh, tiles
// of 8 tokens) calls this epilogue.

#include "prelude.cuh"
#include "weights/common.cuh"
#include "weights.cuh"

#define MM_NORM 1
#define MM_GATED 0

#include "matmul_core.cuh"

// The value stored at p.out[at] from the dot products g (the weight, or the gate) and u
// (the up weight).
__device__ __forceinline__ float mm_epilogue(const MatmulArgs& p, unsigned int at, float g, float u) {
    (void)p; (void)at; (void)u;
    return g;
}

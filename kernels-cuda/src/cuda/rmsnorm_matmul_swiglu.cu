// rmsnorm_matmul_swiglu.cu: RMSNorm, gate/up matmuls and SwiGLU in one kernel.
// Grid and math as rmsnorm_matmul_swiglu.wgsl; the matrix-vector core (matmul_core.cuh, tiles
// of 8 tokens) calls this epilogue.

#include "prelude.cuh"
#include "weights/common.cuh"
#include "weights.cuh"

#define MM_NORM 1
#define MM_GATED 1

#include "matmul_core.cuh"

// The value stored at p.out[at] from the dot products g (the weight, or the gate) and u
// (the up weight).
__device__ __forceinline__ float mm_epilogue(const MatmulArgs& p, unsigned int at, float g, float u) {
    (void)p; (void)at;
    return silu(g) * u;
}

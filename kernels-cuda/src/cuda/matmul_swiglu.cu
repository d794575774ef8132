// matmul_swiglu.cu: out = silu(x · Gateᵀ) · (x · Upᵀ); gate and up share the input
// and the epilogue.
// Grid and math as matmul_swiglu.wgsl; the matrix-vector core (matmul_core.cuh, tiles
// of 8 tokens) calls this epilogue.

#include "prelude.cuh"
#include "weights/common.cuh"
#include "weights.cuh"

#define MM_NORM 0
#define MM_GATED 1

#include "matmul_core.cuh"

// The value stored at p.out[at] from the dot products g (the weight, or the gate) and u
// (the up weight).
__device__ __forceinline__ float mm_epilogue(const MatmulArgs& p, unsigned int at, float g, float u) {
    (void)p; (void)at;
    return silu(g) * u;
}

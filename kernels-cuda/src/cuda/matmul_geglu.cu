// matmul_geglu.cu: out = gelu(x · Gateᵀ) · (x · Upᵀ) (Gemma 3's FFN); gate and up share
// the input and the epilogue. Weights of the unpacked types only: the dp4a matvecs of
// the packed ones have no GeGLU epilogue (lower.rs: supports).
// Grid and math as matmul_geglu.wgsl; the matrix-vector core (matmul_core.cuh, tiles
// of 8 tokens) and the tensor-core prefill path (matmul_mma.cu) share this epilogue.

#include "prelude.cuh"
#include "weights/common.cuh"
#include "weights.cuh"
#include "gelu.cuh"

#define MM_NORM 0
#define MM_GATED 1

#include "matmul_core.cuh"

// The value stored at p.out[at] from the dot products g (the weight, or the gate) and u
// (the up weight).
__device__ __forceinline__ float mm_epilogue(const MatmulArgs& p, unsigned int at, float g, float u) {
    (void)p; (void)at;
    return gelu_f16(g) * u;
}

#include "matmul_mma.cu"

// argmax.cu: greedy LM head: the index of the largest logit of each row of the plan's
// output (rows, cols), the lowest index on ties, 0xFFFFFFFF (NON_FINITE_ROW) for a row
// holding a NaN or +inf (kiln_ir::backend::argmax), so that a decode step returns token
// ids instead of the logits. One block per row.

#include "prelude.cuh"

// The better of two (value, index) candidates: larger value, then lower index (a NaN never
// wins here; the row is flagged instead).
__device__ __forceinline__ void better(float& v, unsigned int& i, float v2, unsigned int i2) {
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

//   p.ids (rows) the chosen token of each row.
extern "C" __global__ void KILN_MAIN(const __grid_constant__ ArgmaxArgs p) {
    const unsigned int* __restrict__ step = p.step;
    unsigned int* ids = p.ids;
    __shared__ float best_v[32];        // (warps) each warp's best value
    __shared__ unsigned int best_i[32]; // (warps) and its index
    __shared__ unsigned int non_finite; // a NaN or +inf somewhere in the row
    unsigned int r = blockIdx.x;
    if (r >= step[p.rows_sel]) {
        return; // uniform across the block
    }
    if (threadIdx.x == 0u) {
        non_finite = 0u;
    }
    __syncthreads();
    const float* row = p.logits + r * p.cols;
    const float inf = bits_f32(0x7F800000u);
    float v = bits_f32(0xFF800000u); // -inf
    unsigned int i = 0xFFFFFFFFu;
    bool bad = false;
    for (unsigned int c = threadIdx.x; c < p.cols; c += blockDim.x) {
        float x = row[c];
        bad = bad || !(x < inf); // NaN compares false
        better(v, i, x, c);
    }
    if (bad) {
        non_finite = 1u; // every writer writes the same value
    }
#pragma unroll
    for (unsigned int s = WARP / 2u; s > 0u; s /= 2u) {
        better(v, i, __shfl_xor_sync(0xFFFFFFFFu, v, s), __shfl_xor_sync(0xFFFFFFFFu, i, s));
    }
    if (threadIdx.x % WARP == 0u) {
        best_v[threadIdx.x / WARP] = v;
        best_i[threadIdx.x / WARP] = i;
    }
    __syncthreads();
    if (threadIdx.x == 0u) {
        for (unsigned int w = 1u; w < blockDim.x / WARP; w++) {
            better(v, i, best_v[w], best_i[w]);
        }
        // An empty row (or all -inf): token 0, as the host's argmax gives.
        ids[r] = non_finite != 0u ? 0xFFFFFFFFu : (i == 0xFFFFFFFFu ? 0u : i);
    }
}
